"""DKIM keys we generate: the record to publish, what the check says of it, rotation, and signatures
that receivers verify against the published record."""

import email
from email import policy as email_policy

import dkim as dkimpy
import pytest

from mailboxes.dns import dkim, service
from mailboxes.models import DkimKey, SendingDomain

pytestmark = pytest.mark.django_db


def publish_basics(server, name):
    server.add(name, "TXT", "v=spf1 -all")
    server.add(f"_dmarc.{name}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{name}")
    server.add(name, "MX", f"10 mx.{name}.")


def dkim_record(body):
    return next(r for r in body["records_to_publish"] if "._domainkey." in r["name"])


def test_a_new_domain_gets_a_key_and_its_published_record_passes(api, dns_server):
    created = api.post("/api/v1/domains", {"name": "new.test"}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["status"] == "unchecked"
    record = dkim_record(body)
    assert record["type"] == "TXT"
    assert record["name"].endswith("._domainkey.new.test")
    assert record["value"].startswith("v=DKIM1; k=rsa; p=")
    assert len(record["strings"]) == 2  # a 2048-bit key does not fit in one 255-byte string
    assert all(len(s.encode()) <= 255 for s in record["strings"])
    assert "".join(record["strings"]) == record["value"]

    publish_basics(dns_server, "new.test")
    dns_server.add(record["name"], "TXT", record["strings"])
    checked = api.post(f"/api/v1/domains/{body['id']}/check?wait=true")

    assert checked.status_code == 200
    result = checked.json()
    assert result["status"] == "pass", result["checks"]
    selector = record["name"].split(".")[0]
    assert result["checks"]["dkim"]["message"] == f"DKIM keys are published and valid: {selector} (ours, RSA 2048)."


def test_a_domain_that_already_has_a_key_keeps_it(api, workspace):
    created = api.post("/api/v1/domains", {"name": "once.test"}, format="json").json()

    assert DkimKey.objects.filter(domain_id=created["id"]).count() == 1
    assert [r["name"] for r in created["records_to_publish"]].count(dkim_record(created)["name"]) == 1


def test_a_signature_verifies_against_the_published_record_and_not_after_tampering(dns_server, workspace):
    domain = SendingDomain.objects.create(workspace=workspace, name="signed.test")
    key = dkim.generate_key(domain=domain)
    dns_server.add(f"{key.selector}._domainkey.signed.test", "TXT", key.txt_chunks())
    message = (b"From: Jane <jane@signed.test>\r\nTo: prospect@example.org\r\nSubject: Hello\r\n"
               b"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <1@signed.test>\r\n"
               b"List-Unsubscribe: <https://cp.example/u/abc>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
               b"\r\nHello there.\r\n")

    signed = dkim.sign(message, key=key, domain_name="signed.test") + message

    assert dkimpy.verify(signed, dnsfunc=dkim.txt_record)
    assert not dkimpy.verify(signed.replace(b"Hello there.", b"Hello again."), dnsfunc=dkim.txt_record)


def test_rotation_publishes_both_keys_and_warns_until_the_new_one_is_in_dns(zone, api):
    domain = zone.domain("rotate.test")
    old = domain.dkim_keys.get()
    new = dkim.generate_key(domain=domain, selector="cp2")

    names = [r["name"] for r in api.get(f"/api/v1/domains/{domain.pk}").json()["records_to_publish"]]
    assert {"cp1._domainkey.rotate.test", "cp2._domainkey.rotate.test"} <= set(names)

    dkim_check = service.run_checks(domain=domain).checks["dkim"]
    assert dkim_check["status"] == "warn"
    assert "No DKIM record at cp2._domainkey.rotate.test for our inactive key (rotation)" in dkim_check["message"]

    zone.server.add("cp2._domainkey.rotate.test", "TXT", new.txt_chunks())
    dkim.activate_key(key=new)
    dkim_check = service.run_checks(domain=domain).checks["dkim"]
    assert dkim_check["status"] == "pass", dkim_check
    assert "cp2 (ours, RSA 2048)" in dkim_check["message"] and "cp1 (ours, RSA 2048)" in dkim_check["message"]

    dkim.retire_key(key=old)
    zone.server.remove("cp1._domainkey.rotate.test")
    dkim_check = service.run_checks(domain=domain).checks["dkim"]
    assert dkim_check["status"] == "pass"
    assert "cp1" not in dkim_check["message"]


@pytest.mark.django_db(transaction=True)
def test_a_dispatched_message_verifies_against_the_record_we_published(api, sending_setup, smtp_sink, run_workers,
                                                                       dns_server):
    domain = sending_setup["domain"]
    dkim.generate_key(domain=domain)
    record = dkim_record(api.get(f"/api/v1/domains/{domain.pk}").json())
    publish_basics(dns_server, "mail.acme.com")
    dns_server.add(record["name"], "TXT", record["strings"])
    assert api.post(f"/api/v1/domains/{domain.pk}/check?wait=true").json()["status"] == "pass"

    sent = api.post("/api/v1/messages", {"to": "prospect@example.org", "subject": "Hi", "text": "Hello"},
                    format="json")
    assert sent.status_code == 202, sent.json()
    run_workers()

    _, _, raw = smtp_sink.messages[0]
    assert email.message_from_bytes(raw, policy=email_policy.default)["DKIM-Signature"]
    assert dkimpy.verify(raw, dnsfunc=dkim.txt_record)
