"""What a run changes: the domain's pause while authentication fails, events, history and audit."""

import socket

import pytest

from audit.models import AuditEvent
from controlplane.models import Event
from mailboxes.dns import service
from mailboxes.models import DomainCheckRun, SendingDomain
from mailboxes.services import identities
from tests.dns.conftest import QUERY_TIMEOUT

pytestmark = pytest.mark.django_db


def events(type_):
    return list(Event.objects.filter(type=type_).order_by("occurred_at"))


@pytest.fixture
def domain(zone):
    return zone.domain("acme.test")


def test_a_domain_whose_dkim_record_disappears_is_paused_and_resumes_when_it_is_back(api, zone, domain):
    service.run_checks(domain=domain)
    assert api.get(f"/api/v1/domains/{domain.pk}").json()["paused"] is False

    zone.server.remove("cp1._domainkey.acme.test")
    service.run_checks(domain=domain)

    body = api.get(f"/api/v1/domains/{domain.pk}").json()
    assert body["status"] == "fail"
    assert body["paused"] is True
    assert body["paused_reason"].startswith("DKIM failing: No DKIM record at cp1._domainkey.acme.test")

    zone.server.add("cp1._domainkey.acme.test", "TXT", domain.dkim_keys.get().txt_chunks())
    service.run_checks(domain=domain)

    body = api.get(f"/api/v1/domains/{domain.pk}").json()
    assert body["status"] == "pass"
    assert body["paused"] is False
    assert body["paused_reason"] == ""
    actions = list(AuditEvent.objects.filter(object_id=domain.pk, action__in=["domain.paused", "domain.resumed"])
                   .order_by("seq").values_list("action", flat=True))
    assert actions == ["domain.paused", "domain.resumed"]


def test_status_changes_emit_one_event_each(zone, domain):
    service.run_checks(domain=domain)
    assert [e.data["status"] for e in events("domain.check_passed")] == ["pass"]

    zone.server.set("_dmarc.acme.test", "TXT", "v=DMARC1; p=reject; rua=mailto:a@acme.test",
                    "v=DMARC1; p=none; rua=mailto:b@acme.test")
    service.run_checks(domain=domain)
    service.run_checks(domain=domain)  # still failing: no second event

    failed = events("domain.check_failed")
    assert len(failed) == 1
    assert failed[0].data["domain"] == {"id": domain.pk, "name": "acme.test"}
    assert failed[0].data["previous_status"] == "pass"
    assert failed[0].data["checks"]["dmarc"]["status"] == "fail"
    assert "2 DMARC records" in failed[0].data["checks"]["dmarc"]["message"]

    zone.server.set("_dmarc.acme.test", "TXT", "v=DMARC1; p=reject; rua=mailto:a@acme.test")
    service.run_checks(domain=domain)

    passed = events("domain.check_passed")
    assert len(passed) == 2
    assert passed[1].data["previous_status"] == "fail"


def test_the_api_event_feed_shows_the_failure(api, zone, domain):
    zone.server.remove("_dmarc.acme.test")
    service.run_checks(domain=domain)

    feed = api.get("/api/v1/events?type=domain.check_failed").json()["results"]

    assert [e["type"] for e in feed] == ["domain.check_failed"]
    assert feed[0]["data"]["domain"]["name"] == "acme.test"


def test_an_operators_pause_is_never_lifted_by_passing_checks(zone, domain):
    identities.set_domain_paused(domain=domain, paused=True, reason="Holding sends for a legal review")

    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert domain.status == "pass"
    assert domain.paused is True
    assert domain.paused_reason == "Holding sends for a legal review"


def test_an_operators_pause_over_a_checks_pause_is_kept(zone, domain):
    zone.server.remove("_dmarc.acme.test")
    service.run_checks(domain=domain)
    identities.set_domain_paused(domain=domain, paused=True, reason="Investigating with IT")
    zone.server.add("_dmarc.acme.test", "TXT", "v=DMARC1; p=reject; rua=mailto:a@acme.test")

    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert (domain.paused, domain.paused_reason) == (True, "Investigating with IT")


def test_with_the_setting_off_failing_authentication_does_not_pause(zone, domain, workspace):
    workspace.pause_domains_on_auth_failure = False
    workspace.save()
    zone.server.set("acme.test", "TXT", "v=spf1 include:_spf.google.com +all")

    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert domain.status == "fail"
    assert domain.paused is False
    assert len(events("domain.check_failed")) == 1


def test_a_failing_blocklist_or_mx_does_not_pause(zone, domain):
    zone.server.add("acme.test.dbl.test", "A", "127.0.1.2")
    zone.server.remove("acme.test", "MX")

    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert domain.status == "fail"
    assert domain.checks["blocklists"]["status"] == "fail"
    assert domain.paused is False


def test_the_pause_reason_follows_what_fails(zone, domain):
    zone.server.remove("_dmarc.acme.test")
    service.run_checks(domain=domain)
    zone.server.set("acme.test", "TXT", "v=spf1 include:_spf.google.com +all")

    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert domain.paused_reason.startswith("SPF failing: SPF for acme.test ends in +all")
    assert "DMARC failing: No DMARC record at _dmarc.acme.test" in domain.paused_reason


@pytest.fixture
def resolver_down(settings, dns_server):
    """Switches the resolver to a name server that receives every query and answers none, and back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    silent = f"127.0.0.1:{sock.getsockname()[1]}"

    def switch(down: bool):
        settings.DNS_NAMESERVERS = [silent if down else dns_server.nameserver]
        settings.DNS_QUERY_TIMEOUT = 0.1 if down else QUERY_TIMEOUT

    yield switch
    sock.close()


def test_resolver_trouble_never_pauses_nor_resumes(zone, domain, resolver_down):
    resolver_down(True)

    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert domain.status == "unknown"
    assert domain.paused is False
    assert "did not answer within 0.1 s" in domain.checks["dkim"]["message"]
    assert events("domain.check_failed") == []

    resolver_down(False)
    zone.server.remove("cp1._domainkey.acme.test")
    service.run_checks(domain=domain)
    resolver_down(True)
    service.run_checks(domain=domain)

    domain.refresh_from_db()
    assert domain.status == "unknown"
    assert domain.paused is True  # still paused: nothing says DKIM works again


def test_a_recovery_after_an_unknown_run_is_reported(zone, domain, resolver_down):
    zone.server.remove("_dmarc.acme.test")
    service.run_checks(domain=domain)
    resolver_down(True)
    service.run_checks(domain=domain)
    resolver_down(False)
    zone.server.add("_dmarc.acme.test", "TXT", "v=DMARC1; p=reject; rua=mailto:a@acme.test")

    service.run_checks(domain=domain)

    passed = events("domain.check_passed")
    assert passed[-1].data["previous_status"] == "fail"
    domain.refresh_from_db()
    assert domain.status == "pass"
    assert domain.paused is False


def test_each_run_is_kept_with_what_changed(zone, domain):
    first = service.run_checks(domain=domain, trigger="command")
    zone.server.remove("acme.test", "MX")
    second = service.run_checks(domain=domain)

    runs = list(DomainCheckRun.objects.filter(domain=domain).order_by("started_at"))
    assert [r.pk for r in runs] == [first.pk, second.pk]
    assert first.trigger == "command" and first.previous_status == "unchecked"
    assert {c["check"] for c in first.changes} == {"spf", "dkim", "dmarc", "mx", "blocklists"}
    assert second.status == "warn" and second.previous_status == "pass"
    assert second.changes == [{"check": "mx", "before": "pass", "after": "warn",
                               "message": "acme.test has no MX record: bounces and replies to it cannot be delivered."}]
    assert second.checks["mx"]["status"] == "warn"
    assert second.duration_ms >= 0
    audit = AuditEvent.objects.filter(action="domain.check_status_changed", object_id=domain.pk).order_by("seq")
    assert audit.last().before == {"status": "pass", "mx": "pass"}
    assert audit.last().after == {"status": "warn", "mx": "warn"}
    assert audit.last().actor_label == "tests"


def test_a_run_that_changes_nothing_is_not_audited(zone, domain):
    service.run_checks(domain=domain)
    count = AuditEvent.objects.filter(action="domain.check_status_changed").count()

    service.run_checks(domain=domain)

    assert AuditEvent.objects.filter(action="domain.check_status_changed").count() == count
    assert SendingDomain.objects.get(pk=domain.pk).check_runs.count() == 2
