"""Provider callbacks at /hooks/{kind}/{provider_id}/: each provider's documented bounce and complaint payloads
become canonical events and suppressions; anything unverifiable, foreign or malformed changes nothing."""

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from django.test import Client

from controlplane.models import Event
from suppression.models import Suppression
from tests.providers.conftest import make_mailbox, send

pytestmark = pytest.mark.django_db(transaction=True)

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-6aad65c2f9911b05cd53efda11f913f9.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


def hook(connection, body, *, content_type="application/json", **headers):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return Client().post(f"/hooks/{connection.kind}/{connection.pk}/", data=data, content_type=content_type,
                         **headers)


def suppressed(api, address):
    """The contract's fields of the check (the entries that explain it are checked in tests/suppression)."""
    check = api.get("/api/v1/suppressions/check", {"address": address}).json()
    return {k: v for k, v in check.items() if k not in ("entry", "matches")}


def feed(api, *types):
    return api.get("/api/v1/events", {"type": ",".join(types)}).json()["results"]


def assert_bounced_and_complained(api, bounced, complained):
    """The contract's outcome: canonical events in the feed, both addresses suppressed, statuses moved on."""
    events = feed(api, "message.bounced", "message.complained", "suppression.created")
    by_type = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    bounce = by_type["message.bounced"][0]
    assert bounce["message"]["id"] == bounced["id"] and bounce["data"]["bounce_type"] == "hard"
    assert by_type["message.complained"][0]["message"]["id"] == complained["id"]
    assert {e["data"]["reason"] for e in by_type["suppression.created"]} == {"hard_bounce", "complaint"}
    assert suppressed(api, bounced["to"]) | {"created_at": None} == {
        "suppressed": True, "matched": bounced["to"], "reason": "hard_bounce", "created_at": None}
    assert suppressed(api, complained["to"])["reason"] == "complaint"
    assert api.get(f"/api/v1/messages/{bounced['id']}").json()["status"] == "bounced"
    assert api.get(f"/api/v1/messages/{complained['id']}").json()["status"] == "complained"


def nothing_changed(workspace, before_events):
    assert Event.objects.filter(workspace=workspace).count() == before_events
    assert not Suppression.objects.filter(workspace=workspace).exists()


# --- Amazon SES via SNS ----------------------------------------------------------------------------

@pytest.fixture
def sns_signer():
    """An SNS-like signer: a certificate served at an SNS SigningCertURL (faked at the HTTP layer)."""
    from providers import esp

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    esp._certificates.clear()

    def sign(message: dict) -> dict:
        fields = esp.SNS_SIGNED_FIELDS[message["Type"]]
        text = "".join(f"{n}\n{message[n]}\n" for n in fields if n in message)
        signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
        return {**message, "SignatureVersion": "2", "Signature": base64.b64encode(signature).decode(),
                "SigningCertURL": CERT_URL}

    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        fake.get(CERT_URL, body=pem)
        sign.http = fake
        yield sign
    esp._certificates.clear()


def sns_notification(sign, ses_event: dict) -> dict:
    return sign({"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
                 "Message": json.dumps(ses_event), "Timestamp": "2026-03-02T10:00:01.000Z",
                 "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"})


def ses_mail(message):
    return {"timestamp": "2026-03-02T10:00:00.000Z", "source": message["from"],
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/mail.acme.com",
            "sendingAccountId": "123456789012", "messageId": message["provider_message_id"],
            "destination": [message["to"]], "headersTruncated": False,
            "headers": [{"name": "Message-ID", "value": message["message_id_header"]}],
            "commonHeaders": {"from": [message["from"]], "to": [message["to"]],
                              "messageId": message["message_id_header"], "subject": "Quick question"}}


def ses_bounce(message):
    return {"notificationType": "Bounce", "mail": ses_mail(message), "bounce": {
        "bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-03-02T10:00:02.000Z",
        "feedbackId": "0102018c-bounce-000000", "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        "bouncedRecipients": [{"emailAddress": message["to"], "action": "failed", "status": "5.1.1",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}}


def ses_complaint(message):
    return {"notificationType": "Complaint", "mail": ses_mail(message), "complaint": {
        "userAgent": "ExampleCorp Feedback Loop (V0.01)", "complaintFeedbackType": "abuse",
        "complainedRecipients": [{"emailAddress": message["to"]}], "timestamp": "2026-03-02T10:00:03.000Z",
        "feedbackId": "0102018c-complaint-000000", "arrivalDate": "2026-03-02T10:00:03.000Z"}}


@pytest.fixture
def ses(workspace, http_fake):
    counter = iter(range(1, 100))
    http_fake.default = lambda handler: (200, {"Content-Type": "application/json"},
                                         json.dumps({"MessageId": f"0102018c-ses-{next(counter):06d}"}))
    return make_mailbox(workspace, "ses", settings={"region": "eu-west-1", "api_url": http_fake.url},
                        credentials={"access_key_id": "AKIAEXAMPLE123", "secret_access_key": "s",
                                     "webhook_username": "sns", "webhook_password": "hook-pass"})


SNS_AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"sns:hook-pass").decode()}


def sns_headers(message):
    return {**SNS_AUTH, "HTTP_X_AMZ_SNS_MESSAGE_TYPE": message["Type"], "HTTP_X_AMZ_SNS_MESSAGE_ID": message["MessageId"]}


def test_ses_bounce_and_complaint(api, workspace, run_workers, ses, sns_signer):
    bounced = send(api, run_workers, ses, to="gone@example.com")
    complained = send(api, run_workers, ses, to="angry@example.com")
    for ses_event, message in ((ses_bounce(bounced), bounced), (ses_complaint(complained), complained)):
        body = sns_notification(sns_signer, ses_event)
        answer = hook(ses.provider, body, **sns_headers(body))
        assert answer.status_code == 200, answer.content
        assert answer.json()["matched"] == 1
    assert_bounced_and_complained(api, bounced, complained)


def test_ses_subscription_confirmation_is_verified_then_confirmed(workspace, ses, sns_signer):
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f37"
    confirm = sns_signer.http.get(subscribe, body="<ConfirmSubscriptionResponse/>")
    body = sns_signer({"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": "2336412f37",
                       "TopicArn": TOPIC, "Message": "You have chosen to subscribe to the topic.",
                       "SubscribeURL": subscribe, "Timestamp": "2026-03-02T10:00:00.000Z"})
    forged = {**body, "SubscribeURL": "https://evil.example.com/confirm"}
    assert hook(ses.provider, forged, **sns_headers(forged)).status_code == 403
    assert confirm.call_count == 0
    answer = hook(ses.provider, body, **sns_headers(body))
    assert answer.status_code == 200 and answer.json()["note"] == "subscription confirmed"
    assert confirm.call_count == 1


def test_ses_unverifiable_notifications_change_nothing(api, workspace, run_workers, ses, sns_signer):
    message = send(api, run_workers, ses, to="gone@example.com")
    before = Event.objects.filter(workspace=workspace).count()
    good = sns_notification(sns_signer, ses_bounce(message))

    tampered = {**good, "Message": good["Message"].replace("Permanent", "Transient")}
    assert hook(ses.provider, tampered, **sns_headers(tampered)).status_code == 403
    elsewhere = {**good, "SigningCertURL": "https://attacker.example.com/cert.pem"}
    assert hook(ses.provider, elsewhere, **sns_headers(elsewhere)).status_code == 403
    no_auth = hook(ses.provider, good, HTTP_X_AMZ_SNS_MESSAGE_TYPE="Notification")
    assert no_auth.status_code == 401 and no_auth["WWW-Authenticate"].startswith("Basic")
    wrong_auth = hook(ses.provider, good, HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"sns:nope").decode())
    assert wrong_auth.status_code == 401
    assert hook(ses.provider, "{\"Type\": \"Notification\", \"Message", **SNS_AUTH).status_code == 400
    nothing_changed(workspace, before)


# --- Mailgun ---------------------------------------------------------------------------------------

MAILGUN_KEY = "whsk-1c2d3e4f5a6b7c8d"


def mailgun_signed(event_data, key=MAILGUN_KEY):
    timestamp, token = str(int(time.time())), uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


def mailgun_event(message, event, **extra):
    return {"id": uuid.uuid4().hex[:22], "timestamp": time.time(), "log-level": "error", "event": event,
            "recipient": message["to"], "recipient-domain": message["to"].split("@")[1], "tags": [],
            "user-variables": {}, "envelope": {"sender": message["from"], "transport": "smtp"},
            "message": {"headers": {"to": message["to"], "message-id": message["provider_message_id"].strip("<>"),
                                    "from": message["from"], "subject": "Quick question"},
                        "attachments": [], "size": 1111}, **extra}


@pytest.fixture
def mailgun(workspace):
    return make_mailbox(workspace, "mailgun", settings={"domain": "mail.acme.com"},
                        credentials={"api_key": "key-x", "webhook_signing_key": MAILGUN_KEY})


def mailgun_send(api, run_workers, mailbox, to):
    with responses.RequestsMock() as fake:
        fake.post("https://api.mailgun.net/v3/mail.acme.com/messages.mime",
                  json={"id": f"<20260302100000.{uuid.uuid4().hex[:8]}@mail.acme.com>", "message": "Queued. Thank you."})
        return send(api, run_workers, mailbox, to=to)


def test_mailgun_bounce_and_complaint(api, workspace, run_workers, mailgun):
    bounced = mailgun_send(api, run_workers, mailgun, "gone@example.com")
    complained = mailgun_send(api, run_workers, mailgun, "angry@example.com")
    failure = mailgun_event(bounced, "failed", severity="permanent", reason="bounce", **{"delivery-status": {
        "attempt-no": 1, "message": "550 5.1.1 The email account that you tried to reach does not exist.",
        "code": 550, "description": "", "session-seconds": 0.4}})
    answer = hook(mailgun.provider, mailgun_signed(failure))
    assert answer.status_code == 200, answer.content
    complaint = mailgun_event(complained, "complained")
    assert hook(mailgun.provider, mailgun_signed(complaint)).status_code == 200
    assert_bounced_and_complained(api, bounced, complained)


def test_mailgun_temporary_failure_is_a_deferral_and_repeats_are_recorded_once(api, workspace, run_workers, mailgun):
    message = mailgun_send(api, run_workers, mailgun, "busy@example.com")
    payload = mailgun_signed(mailgun_event(message, "failed", severity="temporary", reason="generic"))
    assert hook(mailgun.provider, payload).status_code == 200
    assert hook(mailgun.provider, payload).status_code == 200
    assert len(feed(api, "message.deferred")) == 1
    assert suppressed(api, "busy@example.com") == {"suppressed": False}
    assert api.get(f"/api/v1/messages/{message['id']}").json()["status"] == "sent"


def test_mailgun_bad_signature_unknown_connection_and_foreign_message(api, workspace, other_workspace, run_workers,
                                                                       mailgun):
    message = mailgun_send(api, run_workers, mailgun, "gone@example.com")
    failure = mailgun_event(message, "failed", severity="permanent", reason="bounce")
    before = Event.objects.filter(workspace=workspace).count()

    assert hook(mailgun.provider, mailgun_signed(failure, key="not-the-key")).status_code == 403
    unknown = Client().post("/hooks/mailgun/prv_doesnotexist/", data=json.dumps(mailgun_signed(failure)),
                            content_type="application/json")
    assert unknown.status_code == 404
    wrong_kind = Client().post(f"/hooks/postmark/{mailgun.provider.pk}/", data=json.dumps(mailgun_signed(failure)),
                               content_type="application/json")
    assert wrong_kind.status_code == 404
    # A connection of another workspace, correctly signed, cannot touch this workspace's message.
    foreign = make_mailbox(other_workspace, "mailgun", settings={"domain": "mail.globex.com"}, domain="mail.globex.com",
                           credentials={"api_key": "key-y", "webhook_signing_key": "globex-key"})
    answer = hook(foreign.provider, mailgun_signed(failure, key="globex-key"))
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    nothing_changed(workspace, before)
    assert not Event.objects.filter(workspace=other_workspace, type="message.bounced").exists()


def test_malformed_truncated_and_oversized_callbacks(api, workspace, run_workers, mailgun, settings):
    message = mailgun_send(api, run_workers, mailgun, "gone@example.com")
    before = Event.objects.filter(workspace=workspace).count()
    body = json.dumps(mailgun_signed(mailgun_event(message, "failed", severity="permanent")))
    truncated = hook(mailgun.provider, body[: len(body) // 2])
    assert truncated.status_code == 400 and truncated.json()["error"]["code"] == "malformed_payload"
    assert hook(mailgun.provider, {"signature": {}, "unexpected": True}).status_code == 400
    assert hook(mailgun.provider, b"\xff\xfe not json").status_code == 400
    settings.PROVIDER_CALLBACK_MAX_BYTES = 1000
    oversized = hook(mailgun.provider, body + " " * 2000)
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "payload_too_large"
    nothing_changed(workspace, before)


# --- SendGrid --------------------------------------------------------------------------------------

@pytest.fixture
def sendgrid_keys():
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def sendgrid_signed(private, events):
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()))
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {"HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": base64.b64encode(signature).decode(),
                  "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp}


def sendgrid_event(message, event, **extra):
    return {"email": message["to"], "timestamp": int(time.time()), "smtp-id": message["message_id_header"],
            "event": event, "category": ["cold"], "sg_event_id": base64.b64encode(uuid.uuid4().bytes).decode(),
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "anymail_id": message["provider_message_id"], **extra}


def test_sendgrid_bounce_and_complaint(api, workspace, run_workers, sendgrid_keys):
    private, public = sendgrid_keys
    mailbox = make_mailbox(workspace, "sendgrid", credentials={"api_key": "SG.k", "webhook_verification_key": public})
    with responses.RequestsMock() as fake:
        fake.post("https://api.sendgrid.com/v3/mail/send", status=202, body=b"", headers={"X-Message-Id": "x1"})
        bounced = send(api, run_workers, mailbox, to="gone@example.com")
        complained = send(api, run_workers, mailbox, to="angry@example.com")
    events = [sendgrid_event(bounced, "delivered", response="250 OK"),
              sendgrid_event(bounced, "bounce", reason="550 5.1.1 unknown recipient", status="5.1.1", type="bounce"),
              sendgrid_event(complained, "spamreport"),
              sendgrid_event(complained, "open", useragent="Mozilla/5.0")]
    body, headers = sendgrid_signed(private, events)
    answer = hook(mailbox.provider, body, **headers)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"received": 3, "matched": 3}
    assert_bounced_and_complained(api, bounced, complained)
    assert [e["message"]["id"] for e in feed(api, "message.delivered")] == [bounced["id"]]

    forged_body, forged_headers = sendgrid_signed(ec.generate_private_key(ec.SECP256R1()), events)
    assert hook(mailbox.provider, forged_body, **forged_headers).status_code == 403


# --- Postmark --------------------------------------------------------------------------------------

def test_postmark_bounce_and_complaint(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "postmark", credentials={"server_token": "pm", "webhook_username": "pm-hook",
                                                               "webhook_password": "pm-pass"})
    ids = iter(["883953f4-6105-42a2-a16a-77a8eac79483", "00000000-0000-4000-8000-00000000c0de"])
    with responses.RequestsMock() as fake:
        fake.post("https://api.postmarkapp.com/email", json={"To": "gone@example.com", "SubmittedAt": "2026-03-02T10:00:00Z",
                                                             "MessageID": next(ids), "ErrorCode": 0, "Message": "OK"})
        bounced = send(api, run_workers, mailbox, to="gone@example.com")
    with responses.RequestsMock() as fake:
        fake.post("https://api.postmarkapp.com/email", json={"To": "angry@example.com", "SubmittedAt": "2026-03-02T10:00:00Z",
                                                             "MessageID": next(ids), "ErrorCode": 0, "Message": "OK"})
        complained = send(api, run_workers, mailbox, to="angry@example.com")
    auth = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"pm-hook:pm-pass").decode()}
    bounce = {"RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807, "Type": "HardBounce",
              "TypeCode": 1, "Name": "Hard bounce", "Tag": "", "MessageID": bounced["provider_message_id"],
              "Metadata": {}, "ServerID": 23, "Description": "The server was unable to deliver your message.",
              "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
              "Email": bounced["to"], "From": bounced["from"], "BouncedAt": "2026-03-02T10:01:00.000Z",
              "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Quick question"}
    complaint = {"RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42, "Type": "SpamComplaint",
                 "TypeCode": 512, "Name": "Spam complaint", "Tag": "", "MessageID": complained["provider_message_id"],
                 "Metadata": {}, "ServerID": 23, "Description": "", "Details": "Test spam complaint details",
                 "Email": complained["to"], "From": complained["from"], "BouncedAt": "2026-03-02T10:02:00.000Z",
                 "DumpAvailable": True, "Inactive": True, "CanActivate": False, "Subject": "Quick question"}
    before = Event.objects.filter(workspace=workspace).count()
    assert hook(mailbox.provider, bounce).status_code == 401
    wrong = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"pm-hook:guess").decode()}
    assert hook(mailbox.provider, bounce, **wrong).status_code == 403
    assert Event.objects.filter(workspace=workspace).count() == before
    for payload in (bounce, complaint):
        answer = hook(mailbox.provider, payload, **auth)
        assert answer.status_code == 200, answer.content
    assert_bounced_and_complained(api, bounced, complained)
