"""Bounces in the sending mailbox's inbox (RFC 3464 DSNs), read over IMAP from a real server on loopback."""

import base64
import json
from urllib.parse import parse_qs

import pytest
import responses

from controlplane.models import BounceScanState
from providers import bounces
from providers.services import update_connection
from tests.providers.conftest import make_mailbox, send
from tests.providers.imapserver import ImapServer
from tests.providers.test_transports import GMAIL_SEND, GOOGLE_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)


def postfix_dsn(*, original_message_id, recipient, status="5.1.1", action="failed",
                diagnostic="smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown"):
    """A DSN as Postfix writes it (multipart/report, message/delivery-status, text/rfc822-headers)."""
    diagnostic = diagnostic.format(r=recipient)
    return f"""Return-Path: <>
Delivered-To: ann@mail.acme.com
Date: Mon,  2 Mar 2026 10:00:05 +0000 (UTC)
From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: ann@mail.acme.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4F2A31C0B2.1772445605/mx.example.com"
Message-Id: <20260302100005.0C1E31C0B3@mx.example.com>

This is a MIME-encapsulated message.

--4F2A31C0B2.1772445605/mx.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.example.com[203.0.113.5] said: {diagnostic}

--4F2A31C0B2.1772445605/mx.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
X-Postfix-Queue-ID: 4F2A31C0B2
X-Postfix-Sender: rfc822; ann@mail.acme.com
Arrival-Date: Mon,  2 Mar 2026 10:00:04 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: {diagnostic}

--4F2A31C0B2.1772445605/mx.example.com
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <ann@mail.acme.com>
Message-ID: {original_message_id}
From: Ann <ann@mail.acme.com>
To: {recipient}
Subject: Quick question

--4F2A31C0B2.1772445605/mx.example.com--
""".replace("\n", "\r\n").encode()


def exchange_style_dsn(*, original: bytes, recipient):
    """A DSN carrying the whole original message (message/rfc822), with a 4.x.x status: a soft bounce."""
    return (b"From: postmaster@outlook.example\r\nTo: ann@mail.acme.com\r\nSubject: Delivery has failed\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nDelivery has failed to these recipients.\r\n\r\n"
            b"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns;outlook.example\r\n\r\n"
            b"Final-Recipient: rfc822;" + recipient.encode() + b"\r\nAction: failed\r\nStatus: 4.2.2\r\n"
            b"Diagnostic-Code: smtp;452 4.2.2 Mailbox full\r\n\r\n"
            b"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + original + b"\r\n--b1--\r\n")


PLAIN = b"From: colleague@acme.com\r\nTo: ann@mail.acme.com\r\nSubject: lunch?\r\n\r\nSee you at noon.\r\n"


def test_parser_reads_rfc3464_reports():
    hard = bounces.parse_dsn(postfix_dsn(original_message_id="<m1@mail.acme.com>", recipient="gone@example.com"))
    assert hard.original_message_id == "<m1@mail.acme.com>" and hard.reporting_mta == "mx.example.com"
    [item] = hard.recipients
    assert (item.recipient, item.action, item.status) == ("gone@example.com", "failed", "5.1.1")
    assert item.event == ("message.bounced", "hard") and "User unknown" in item.diagnostic
    original = b"Message-ID: <m2@mail.acme.com>\r\nTo: full@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    [soft] = bounces.parse_dsn(exchange_style_dsn(original=original, recipient="full@example.com")).recipients
    assert soft.event == ("message.bounced", "soft")
    assert bounces.parse_dsn(exchange_style_dsn(original=original, recipient="a@b.c")).original_message_id == \
        "<m2@mail.acme.com>"
    delayed = bounces.parse_dsn(postfix_dsn(original_message_id="<m3@x>", recipient="slow@example.com",
                                            action="delayed", status="4.4.1"))
    assert delayed.recipients[0].event == ("message.deferred", "")
    assert bounces.parse_dsn(PLAIN) is None


@pytest.fixture
def imap():
    server = ImapServer(token="ya29.imap-token").start()
    yield server
    server.stop()


def test_dsns_in_a_workspace_inbox_become_bounces_read_only(api, workspace, run_workers, imap):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    info = {"type": "service_account", "client_email": "bounces@acme.iam.gserviceaccount.com", "private_key": pem,
            "token_uri": GOOGLE_TOKEN}
    mailbox = make_mailbox(workspace, "google_workspace", credentials={"service_account_json": json.dumps(info)},
                           settings={"imap_host": "127.0.0.1", "imap_port": imap.port, "imap_security": "none"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        token = fake.post(GOOGLE_TOKEN, json={"access_token": "ya29.imap-token", "expires_in": 3599})
        fake.post(GMAIL_SEND, json={"id": "18c2", "threadId": "18c2"})
        gone = send(api, run_workers, mailbox, to="gone@example.com")
        full = send(api, run_workers, mailbox, to="full@example.com")
        fine = send(api, run_workers, mailbox, to="fine@example.com")

        imap.append(PLAIN)
        hard_uid = imap.append(postfix_dsn(original_message_id=gone["message_id_header"], recipient="gone@example.com"))
        original = f"Message-ID: {full['message_id_header']}\r\nTo: full@example.com\r\n\r\nHi\r\n".encode()
        soft_uid = imap.append(exchange_style_dsn(original=original, recipient="full@example.com"))
        imap.append(postfix_dsn(original_message_id="<not-ours@elsewhere.example>", recipient="who@example.com"))

        assert bounces.enqueue_all() == 1
        run_workers()
        assertions = [parse_qs(c.request.body)["assertion"][0] for c in token.calls]
    scopes = {json.loads(base64.urlsafe_b64decode(a.split(".")[1] + "==="))["scope"] for a in assertions}
    assert scopes == {"https://www.googleapis.com/auth/gmail.send", "https://mail.google.com/"}

    assert api.get(f"/api/v1/messages/{gone['id']}").json()["status"] == "bounced"
    assert api.get(f"/api/v1/messages/{full['id']}").json()["status"] == "bounced"
    assert api.get(f"/api/v1/messages/{fine['id']}").json()["status"] == "sent"
    bounced = api.get("/api/v1/events", {"type": "message.bounced"}).json()["results"]
    assert {(e["message"]["id"], e["data"]["bounce_type"]) for e in bounced} == {(gone["id"], "hard"),
                                                                                (full["id"], "soft")}
    check = api.get("/api/v1/suppressions/check", {"address": "gone@example.com"}).json()
    assert check["suppressed"] is True and check["reason"] == "hard_bounce"
    assert api.get("/api/v1/suppressions/check", {"address": "full@example.com"}).json() == {"suppressed": False}

    verbs = [c.split(" ")[0].upper() for c in imap.commands]
    assert "EXAMINE" in verbs and not {"SELECT", "STORE", "EXPUNGE", "COPY", "MOVE"} & set(verbs)
    assert any(c.startswith("AUTHENTICATE XOAUTH2") for c in imap.commands)
    full_fetches = [c for c in imap.commands if "BODY.PEEK[]" in c]
    assert len(full_fetches) == 3 and not any(c.split()[2] == "1" for c in full_fetches), \
        "only reports are read in full, and only with PEEK"
    assert all("BODY[" not in c.replace("BODY.PEEK[", "") for c in imap.commands)
    state = BounceScanState.objects.get(mailbox=mailbox)
    assert state.last_uid == 4 and state.uidvalidity == 42 and state.bounces_found == 2
    assert hard_uid < soft_uid

    imap.commands.clear()
    bounces.scan_mailbox(mailbox.pk)  # nothing new: nothing read in full, nothing recorded twice
    assert not [c for c in imap.commands if "FETCH" in c.upper()]
    assert len(api.get("/api/v1/events", {"type": "message.bounced"}).json()["results"]) == 2


def test_smtp_mailbox_reads_its_inbox_with_a_password(api, workspace, sending_setup, run_workers, imap):
    mailbox = sending_setup["mailboxes"][0]
    message = send(api, run_workers, mailbox, to="gone@example.com")
    assert message["status"] == "sent"
    update_connection(connection=sending_setup["provider"],
                      settings={**sending_setup["provider"].settings, "imap_host": "127.0.0.1",
                                "imap_port": imap.port, "imap_security": "none"},
                      credentials={"username": "ann@mail.acme.com", "password": "imap-secret"})
    imap.append(postfix_dsn(original_message_id=message["message_id_header"], recipient="gone@example.com"))
    assert bounces.scan_mailbox(mailbox.pk) == {"looked_at": 1, "reports": 1, "recorded": 1}
    assert any(c.upper().startswith("LOGIN") for c in imap.commands)
    assert api.get("/api/v1/suppressions/check", {"address": "gone@example.com"}).json()["reason"] == "hard_bounce"

    update_connection(connection=sending_setup["provider"], credentials={"username": "ann@mail.acme.com",
                                                                         "password": "wrong"})
    assert "error" in bounces.scan_mailbox(mailbox.pk)
    assert BounceScanState.objects.get(mailbox=mailbox).last_error
