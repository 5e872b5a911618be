"""Every DNS case an operator must tell apart gives its exact status and a sentence naming the problem,
both in `GET /domains/{id}` and in `checkdomains`."""

import io

import pytest
from django.core.management import CommandError, call_command

from mailboxes.dns import service
from tests.dns.conftest import DNSBL, GOOGLE_SPF, public_key_of_bits

pytestmark = pytest.mark.django_db


def eleven_lookups(zone, name):
    # 2 at the top, 3 in each of l1 and l2, 3 in l3: 11 in all, one over the limit.
    server = zone.server
    server.add(f"l1.{name}", "TXT", f"v=spf1 include:l2.{name} a mx ~all")
    server.add(f"l2.{name}", "TXT", f"v=spf1 include:l3.{name} a mx ~all")
    server.add(f"l3.{name}", "TXT", f"v=spf1 a mx exists:ok.{name} ~all")
    for label in ("l1", "l2", "l3"):
        server.add(f"{label}.{name}", "A", "192.0.2.10")
        server.add(f"{label}.{name}", "MX", f"10 mx.{name}.")
    server.add(f"ok.{name}", "A", "127.0.0.2")
    return zone.domain(name, spf=f"v=spf1 include:_spf.google.com include:l1.{name} ~all")


def mismatched_key(zone, name, other_public_key):
    zone.server.add(f"cp1._domainkey.{name}", "TXT", f"v=DKIM1; k=rsa; p={other_public_key}")
    return zone.domain(name, publish_our_key=False)


def listed(zone, name):
    zone.server.add(f"{name}.{DNSBL}", "A", "127.0.1.2")
    zone.server.add(f"{name}.{DNSBL}", "TXT", "Listed for spam: https://dbl.test/lookup")
    return zone.domain(name)


def refused(zone, name):
    zone.server.add(f"{name}.{DNSBL}", "A", "127.255.255.254")
    return zone.domain(name)


def silent(zone, name):
    zone.server.silence(name)
    return zone.domain(name)


def servfail(zone, name):
    zone.server.servfail(name)
    return zone.domain(name)


# name, how to build it, the check that shows the problem, its status, the domain's status, words it names.
CASES = [
    ("good.test", lambda z, n, k: z.domain(n), None, "pass", "pass", []),
    ("eleven.test", lambda z, n, k: eleven_lookups(z, n), "spf", "fail", "fail",
     ["11 DNS look-ups", "limit of 10"]),
    ("twospf.test", lambda z, n, k: z.domain(n, spf=["v=spf1 include:_spf.google.com ~all", "v=spf1 mx -all"]),
     "spf", "fail", "fail", ["2 SPF records"]),
    ("plusall.test", lambda z, n, k: z.domain(n, spf="v=spf1 include:_spf.google.com +all"),
     "spf", "fail", "fail", ["+all"]),
    ("noinclude.test", lambda z, n, k: z.domain(n, spf="v=spf1 include:sendgrid.net ~all"),
     "spf", "fail", "fail", ["does not authorise Google Workspace", "include:_spf.google.com"]),
    ("dkim1024.test", lambda z, n, k: z.domain(n, our_key=k["1024"]), "dkim", "warn", "warn", ["1024-bit"]),
    ("dkim512.test", lambda z, n, k: z.domain(n, google_key=public_key_of_bits(512)), "dkim", "fail", "fail",
     ["512-bit", "google._domainkey.dkim512.test"]),
    ("mismatch.test", lambda z, n, k: mismatched_key(z, n, k["other"]), "dkim", "fail", "fail",
     ["cp1._domainkey.mismatch.test", "does not match"]),
    ("dmarcnone.test", lambda z, n, k: z.domain(n, dmarc="v=DMARC1; p=none; rua=mailto:d@{name}"),
     "dmarc", "warn", "warn", ["p=none"]),
    ("nodmarc.test", lambda z, n, k: z.domain(n, dmarc=None), "dmarc", "fail", "fail",
     ["No DMARC record at _dmarc.nodmarc.test"]),
    ("twodmarc.test", lambda z, n, k: z.domain(n, dmarc=["v=DMARC1; p=reject; rua=mailto:a@{name}",
                                                          "v=DMARC1; p=none"]),
     "dmarc", "fail", "fail", ["2 DMARC records"]),
    ("nomx.test", lambda z, n, k: z.domain(n, mx=None), "mx", "warn", "warn", ["no MX record"]),
    ("listed.test", lambda z, n, k: listed(z, n), "blocklists", "fail", "fail", ["listed on dbl.test", "127.0.1.2"]),
    ("refused.test", lambda z, n, k: refused(z, n), "blocklists", "unknown", "unknown", ["127.255.255.254"]),
    ("timeout.test", lambda z, n, k: silent(z, n), "spf", "unknown", "unknown", ["did not answer"]),
    ("servfail.test", lambda z, n, k: servfail(z, n), "dmarc", "unknown", "unknown", ["SERVFAIL"]),
]


@pytest.fixture
def keys(public_key_1024, other_public_key):
    return {"1024": public_key_1024, "other": other_public_key}


@pytest.mark.parametrize("name,build,check,check_status,domain_status,words", CASES, ids=[c[0] for c in CASES])
def test_each_case_through_the_api(api, zone, keys, name, build, check, check_status, domain_status, words):
    domain = build(zone, name, keys)
    service.run_checks(domain=domain)

    body = api.get(f"/api/v1/domains/{domain.pk}").json()

    assert body["status"] == domain_status, body["checks"]
    assert body["checked_at"]
    if check is None:
        assert {c["status"] for c in body["checks"].values()} == {"pass"}, body["checks"]
        return
    shown = body["checks"][check]
    assert shown["status"] == check_status, shown
    for word in words:
        assert word in shown["message"], shown["message"]
    others = {n: c["status"] for n, c in body["checks"].items() if n != check}
    if name not in ("timeout.test", "servfail.test"):
        assert set(others.values()) == {"pass"}, body["checks"]


def test_checkdomains_prints_a_line_per_domain_and_fails_when_one_fails(zone, keys):
    for name, build, *_ in CASES:
        build(zone, name, keys)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError) as raised:
        call_command("checkdomains", "--workspace", "acme", stdout=out, stderr=err)

    assert raised.value.returncode == 1
    lines = {line.split()[1]: line for line in out.getvalue().splitlines() if line.split()[1:2]}
    for name, _, check, check_status, domain_status, words in CASES:
        line = lines[name]
        assert line.startswith(domain_status.upper()), line
        for word in words:
            assert word in line, line
    assert "Checked 16 domains: 1 pass, 3 warn, 3 unknown, 9 fail." in out.getvalue()
    assert "Checking domains" in err.getvalue()  # the progress bar


def test_checkdomains_exits_zero_when_nothing_fails(zone):
    zone.domain("good.test")
    zone.domain("nomx.test", mx=None)
    out = io.StringIO()

    call_command("checkdomains", "--domain", "nomx.test", stdout=out, stderr=io.StringIO())

    assert "WARN    nomx.test (acme): MX warn: nomx.test has no MX record" in out.getvalue()
    assert "good.test" not in out.getvalue()


def test_checkdomains_names_an_unknown_domain(zone):
    with pytest.raises(CommandError, match="No sending domain named “nowhere.test”"):
        call_command("checkdomains", "--domain", "nowhere.test", stdout=io.StringIO(), stderr=io.StringIO())


def test_ten_lookups_are_within_the_limit(zone):
    server = zone.server
    server.add("inc.ten.test", "TXT", "v=spf1 a mx a:mx.ten.test mx:ten.test a:inc.ten.test mx:inc.ten.test a mx ~all")
    server.add("inc.ten.test", "A", "192.0.2.1")
    server.add("inc.ten.test", "MX", "10 mx.ten.test.")
    domain = zone.domain("ten.test", spf="v=spf1 include:_spf.google.com include:inc.ten.test -all")

    spf = service.run_checks(domain=domain).checks["spf"]

    assert spf["status"] == "pass", spf
    assert spf["message"] == "SPF authorises Google Workspace and ends in -all (10 of 10 DNS look-ups)."


def test_the_ptr_mechanism_warns(zone):
    domain = zone.domain("ptr.test", spf="v=spf1 include:_spf.google.com ptr -all")

    spf = service.run_checks(domain=domain).checks["spf"]

    assert spf["status"] == "warn"
    assert "ptr mechanism" in spf["message"]


def test_void_lookups_over_two_fail(zone):
    domain = zone.domain("void.test", spf="v=spf1 include:_spf.google.com a:gone1.void.test a:gone2.void.test "
                                          "a:gone3.void.test -all")

    spf = service.run_checks(domain=domain).checks["spf"]

    assert spf["status"] == "fail"
    assert "3 void look-ups" in spf["message"]
    assert "gone1.void.test, gone2.void.test, gone3.void.test" in spf["message"]


@pytest.mark.parametrize("ending,status,words", [
    ("?all", "fail", "?all (neutral)"),
    ("", "fail", "no all term"),
    ("-all", "pass", "ends in -all"),
])
def test_the_all_term_decides(zone, ending, status, words):
    domain = zone.domain("ending.test", spf=f"v=spf1 include:_spf.google.com {ending}".strip())

    spf = service.run_checks(domain=domain).checks["spf"]

    assert spf["status"] == status
    assert words in spf["message"]


def test_an_spf_redirect_is_followed(zone):
    zone.server.add("_spf.shared.test", "TXT", "v=spf1 include:_spf.google.com -all")
    domain = zone.domain("redirected.test", spf="v=spf1 redirect=_spf.shared.test")

    spf = service.run_checks(domain=domain).checks["spf"]

    assert spf["status"] == "pass", spf
    assert "2 of 10 DNS look-ups" in spf["message"]
    assert "_spf.shared.test TXT v=spf1 include:_spf.google.com -all" in spf["records"]


def test_an_smtp_relay_must_be_covered_by_spf(zone, workspace, dns_server):
    from providers.models import ProviderConnection

    relay = ProviderConnection.objects.create(workspace=workspace, kind="smtp", name="Outbound relay",
                                              settings={"host": "smtp.relay.test", "port": 587, "security": "starttls"})
    dns_server.add("smtp.relay.test", "A", "93.184.216.34")
    uncovered = zone.domain("relayed.test", spf="v=spf1 ip4:203.0.113.0/24 -all", provider=relay)
    covered = zone.domain("covered.test", spf="v=spf1 ip4:93.184.216.0/24 -all", provider=relay)

    spf = service.run_checks(domain=uncovered).checks["spf"]
    assert spf["status"] == "fail"
    assert "does not authorise the SMTP server smtp.relay.test (93.184.216.34)" in spf["message"]
    assert "ip4:93.184.216.34" in spf["message"]
    assert service.run_checks(domain=covered).checks["spf"]["status"] == "pass"


def test_missing_spf_fails(zone):
    domain = zone.domain("nospf.test", spf=None)

    spf = service.run_checks(domain=domain).checks["spf"]

    assert spf["status"] == "fail"
    assert "No SPF record at nospf.test" in spf["message"]


def test_a_subdomain_inherits_the_organisational_dmarc_policy(zone):
    zone.server.add("_dmarc.parent.test", "TXT", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@parent.test")
    domain = zone.domain("mail.parent.test", dmarc=None)

    dmarc = service.run_checks(domain=domain).checks["dmarc"]

    assert dmarc["status"] == "pass"
    assert "p=quarantine (inherited from parent.test)" in dmarc["message"]


def test_dmarc_without_reports_warns_and_shows_alignment(zone):
    domain = zone.domain("norua.test", dmarc="v=DMARC1; p=quarantine; adkim=s")

    dmarc = service.run_checks(domain=domain).checks["dmarc"]

    assert dmarc["status"] == "warn"
    assert "no rua= address" in dmarc["message"]
    assert "Alignment: DKIM strict, SPF relaxed." in dmarc["message"]


def test_a_null_mx_warns(zone):
    domain = zone.domain("nullmx.test", mx="0 .")

    mx = service.run_checks(domain=domain).checks["mx"]

    assert mx["status"] == "warn"
    assert "null MX" in mx["message"]


def test_the_records_seen_are_shown(zone):
    domain = zone.domain("good.test")

    checks = service.run_checks(domain=domain).checks

    assert checks["spf"]["records"] == ["good.test TXT v=spf1 include:_spf.google.com ~all",
                                        f"_spf.google.com TXT {GOOGLE_SPF}"]
    assert checks["mx"]["records"] == ["good.test MX 10 mx.good.test"]
    assert checks["dmarc"]["records"] == ["_dmarc.good.test TXT v=DMARC1; p=reject; rua=mailto:dmarc@good.test; "
                                          "adkim=r; aspf=s"]
    assert "alignment: DKIM relaxed, SPF strict" in checks["dmarc"]["message"]
    assert any(r.startswith("cp1._domainkey.good.test TXT v=DKIM1; k=rsa; p=") for r in checks["dkim"]["records"])
