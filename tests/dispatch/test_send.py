"""From POST /messages to the SMTP server: policy, hand-off, headers, DKIM, one-click unsubscribe."""

import email
from email import policy as email_policy

import dkim
import pytest
from django.test import Client

from controlplane.models import Event, Message
from mailboxes.dns import dkim as dkim_keys
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"to": "Prospect@Example.com", "subject": "Quick question", "text": "Hi there,\nare you the right person?"}


def test_send_reaches_the_smtp_server_with_the_contract_headers(api, sending_setup, smtp_sink, run_workers, workspace):
    key = dkim_keys.generate_key(domain=sending_setup["domain"])
    r = api.post("/api/v1/messages", {**BODY, "html": "<p>Hi there</p>", "metadata": {"lead": 7}}, format="json")
    assert r.status_code == 202, r.json()
    body = r.json()
    assert body["status"] == "queued" and body["to"] == "prospect@example.com" and body["workload"] == "cold"
    assert body["from"] in {m.address for m in sending_setup["mailboxes"]}
    run_workers()
    assert len(smtp_sink.messages) == 1
    mail_from, rcpts, raw = smtp_sink.messages[0]
    assert rcpts == ["prospect@example.com"] and mail_from == body["from"]
    parsed = email.message_from_bytes(raw, policy=email_policy.default)
    assert parsed["Message-ID"] == f"<{body['id']}@mail.acme.com>"
    assert parsed["Date"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = parsed["List-Unsubscribe"].strip("<>")
    assert unsubscribe_url.startswith("http") and "/u/" in unsubscribe_url
    assert f"List-Unsubscribe: <{unsubscribe_url}>\r\n".encode() in raw  # verbatim, not an encoded word
    text = parsed.get_body(("plain",)).get_content()
    assert "Acme" in text and "1 Rue de la Paix" in text and unsubscribe_url in text
    assert "Unsubscribe" in parsed.get_body(("html",)).get_content()
    signature = parsed["DKIM-Signature"]
    assert f"s={key.selector}" in signature.replace(" ", "") and "list-unsubscribe" in signature.lower()
    public = key.txt_value().encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: public)

    detail = api.get(f"/api/v1/messages/{body['id']}").json()
    assert detail["status"] == "sent" and detail["provider_response"].startswith("250")
    assert [e["type"] for e in detail["events"]] == ["message.accepted", "message.sent"]
    assert detail["events"][0]["message"]["metadata"] == {"lead": 7}
    assert detail["decision"]["reason"] == "rotation:round_robin"

    # One-click unsubscribe through the URL in the message suppresses the address everywhere.
    path = "/u/" + unsubscribe_url.split("/u/", 1)[1]
    assert Client().get(path).status_code == 200
    done = Client().post(path, {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    again = api.post("/api/v1/messages", {**BODY, "from": sending_setup["mailboxes"][2].address}, format="json")
    assert_error(again, 422, "suppressed")
    types = list(Event.objects.filter(workspace=workspace).values_list("type", flat=True))
    assert "message.unsubscribed" in types and "suppression.created" in types


def test_forged_unsubscribe_token_changes_nothing(api, sending_setup, run_workers):
    body = api.post("/api/v1/messages", BODY, format="json").json()
    forged = f"/u/{body['id']}:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    assert Client().post(forged, {"List-Unsubscribe": "One-Click"}).status_code == 404
    assert api.get("/api/v1/suppressions/check", {"address": BODY["to"]}).json() == {"suppressed": False}


def test_suppression_added_while_queued_stops_the_send(api, sending_setup, smtp_sink, run_workers):
    first = api.post("/api/v1/messages", BODY, format="json").json()
    second = api.post("/api/v1/messages", {**BODY, "to": "other@globex.com"}, format="json").json()
    api.post("/api/v1/suppressions", {"value": "@example.com", "reason": "dnc"}, format="json")
    run_workers()
    assert smtp_sink.recipients() == ["other@globex.com"]
    assert api.get(f"/api/v1/messages/{first['id']}").json()["status"] == "suppressed"
    assert api.get(f"/api/v1/messages/{second['id']}").json()["status"] == "sent"
    mailbox = next(m for m in api.get("/api/v1/mailboxes").json()["results"] if m["address"] == first["from"])
    assert mailbox["usage"]["today"] == (1 if first["from"] == second["from"] else 0)


def test_domain_suppression_blocks_every_mailbox_and_workload(api, sending_setup):
    api.post("/api/v1/suppressions", {"value": "@example.com"}, format="json")
    for extra in [{}, {"from": "bob@mail.acme.com"}, {"workload": "warm"}, {"to": "ceo@EXAMPLE.com"}]:
        assert_error(api.post("/api/v1/messages", {**BODY, **extra}, format="json"), 422, "suppressed")
    assert Message.objects.count() == 0


def test_paused_mailbox_holds_messages_until_resume(api, sending_setup, smtp_sink, run_workers):
    pinned = sending_setup["mailboxes"][0]
    body = api.post("/api/v1/messages", {**BODY, "from": pinned.address}, format="json").json()
    api.post(f"/api/v1/mailboxes/{pinned.pk}/pause", {"reason": "warming issue"}, format="json")
    run_workers()
    assert smtp_sink.messages == []
    assert api.get(f"/api/v1/messages/{body['id']}").json()["status"] == "queued"
    assert_error(api.post("/api/v1/messages", {**BODY, "from": pinned.address}, format="json"), 422, "mailbox_paused")
    api.post(f"/api/v1/mailboxes/{pinned.pk}/resume")
    run_workers()
    assert smtp_sink.recipients() == ["prospect@example.com"]
    assert api.get(f"/api/v1/messages/{body['id']}").json()["status"] == "sent"


def test_workspace_kill_switch(api, sending_setup, smtp_sink, run_workers):
    body = api.post("/api/v1/messages", BODY, format="json").json()
    api.post("/api/v1/workspace/pause", {"reason": "incident"}, format="json")
    assert_error(api.post("/api/v1/messages", BODY, format="json"), 422, "workspace_paused")
    run_workers()
    assert smtp_sink.messages == []
    api.post("/api/v1/workspace/resume")
    run_workers()
    assert len(smtp_sink.messages) == 1
    assert api.get(f"/api/v1/messages/{body['id']}").json()["status"] == "sent"


def test_cancel_frees_capacity(api, sending_setup, run_workers):
    mailbox = sending_setup["mailboxes"][0]
    mailbox.daily_cap = 1
    mailbox.save()
    body = api.post("/api/v1/messages", {**BODY, "from": mailbox.address}, format="json").json()
    error = assert_error(api.post("/api/v1/messages", {**BODY, "from": mailbox.address}, format="json"), 422,
                         "cap_exhausted")
    assert error["next_available_at"]
    assert api.post(f"/api/v1/messages/{body['id']}/cancel").json()["status"] == "cancelled"
    assert api.post("/api/v1/messages", {**BODY, "from": mailbox.address}, format="json").status_code == 202
    run_workers()
    sent = api.get("/api/v1/messages", {"status": "sent"}).json()["results"]
    assert len(sent) == 1
    assert_error(api.post(f"/api/v1/messages/{sent[0]['id']}/cancel"), 422, "not_cancellable")


def test_transient_then_success_and_permanent_failure(api, sending_setup, smtp_sink, run_workers):
    mailbox = sending_setup["mailboxes"][0]
    smtp_sink.handler.replies.extend(["451 4.3.0 Try again later"])
    retried = api.post("/api/v1/messages", {**BODY, "from": mailbox.address}, format="json").json()
    run_workers()
    detail = api.get(f"/api/v1/messages/{retried['id']}").json()
    assert detail["status"] == "sent"
    assert [e["type"] for e in detail["events"]] == ["message.accepted", "message.deferred", "message.sent"]
    assert "451" in detail["events"][1]["data"]["reply"]

    smtp_sink.handler.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    failed = api.post("/api/v1/messages", {**BODY, "to": "nobody@example.com", "from": mailbox.address},
                      format="json").json()
    run_workers()
    detail = api.get(f"/api/v1/messages/{failed['id']}").json()
    assert detail["status"] == "failed" and "550 5.1.1 No such user" in detail["provider_response"]
    assert len(smtp_sink.messages) == 1


def _first_in_rotation_and_unreachable(sending_setup):
    """The pool's next mailbox in rotation, behind an SMTP server nothing listens on."""
    from providers.services import create_connection

    broken = create_connection(workspace=sending_setup["domain"].workspace, kind="smtp", name="broken",
                               settings={"host": "127.0.0.1", "port": 1, "security": "none"})
    first = sending_setup["mailboxes"][0]
    first.provider = broken
    first.save()
    for m in sending_setup["mailboxes"][1:]:
        m.last_used_at = "2030-01-01T00:00:00Z"
        m.save()
    return first


def test_unpinned_send_fails_over_to_another_mailbox(api, sending_setup, smtp_sink, run_workers, settings):
    settings.DISPATCH_RETRY_DELAYS = [0]
    first = _first_in_rotation_and_unreachable(sending_setup)
    body = api.post("/api/v1/messages", BODY, format="json").json()
    assert body["from"] == first.address
    run_workers()
    detail = api.get(f"/api/v1/messages/{body['id']}").json()
    assert detail["status"] == "sent" and detail["from"] != first.address
    assert detail["decision"]["failover_from"] == first.pk
    assert smtp_sink.recipients() == ["prospect@example.com"]
    usage = {m["address"]: m["usage"]["today"] for m in api.get("/api/v1/mailboxes").json()["results"]}
    assert usage[first.address] == 0 and usage[detail["from"]] == 1


def test_a_failed_over_send_that_is_deferred_again_is_retried(api, sending_setup, smtp_sink, run_workers, settings):
    """After failing over, the new mailbox gets its own retries: a 451 there defers the send (its attempts
    on the new mailbox pick the delay), and the retry goes out."""
    settings.DISPATCH_RETRY_DELAYS = [0]
    first = _first_in_rotation_and_unreachable(sending_setup)
    smtp_sink.handler.replies.append("451 4.3.0 Try again later")
    body = api.post("/api/v1/messages", BODY, format="json").json()
    run_workers()
    detail = api.get(f"/api/v1/messages/{body['id']}").json()
    assert detail["status"] == "sent" and detail["decision"]["failover_from"] == first.pk
    events = [(e["type"], e["data"].get("mailbox"), e["data"].get("failover_to")) for e in detail["events"]]
    second = detail["mailbox"]
    assert second != first.pk and events == [
        ("message.accepted", first.pk, None), ("message.deferred", first.pk, None),
        ("message.deferred", first.pk, second),  # its retries on the first mailbox used up: moved on
        ("message.deferred", second, None),  # the 451 on the second mailbox: retried there
        ("message.sent", second, None)]
    assert smtp_sink.recipients() == ["prospect@example.com"]
