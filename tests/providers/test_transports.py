"""Each provider's transport: what we send (auth, MIME, headers), what we record, how answers are classified.

Provider APIs are faked at the HTTP layer only: `responses` for the requests-based clients, a loopback
HTTP server for Amazon SES (boto3 speaks HTTP through its own stack).
"""

import base64
import email
import json
import time
from email import policy as email_policy
from urllib.parse import parse_qs

import dkim
import pytest
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailboxes.dns import dkim as dkim_keys
from tests.providers.conftest import make_mailbox, send

pytestmark = pytest.mark.django_db(transaction=True)

GMAIL_SEND = "https://gmail.googleapis.com/gmail/v1/users/me/messages/send"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GRAPH_TOKEN = "https://login.microsoftonline.com/tenant-123/oauth2/v2.0/token"


def graph_send_url(address):
    return f"https://graph.microsoft.com/v1.0/users/{address}/sendMail"


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email_policy.default)


def assert_contract_headers(mime, message):
    assert mime["Message-ID"] == message["message_id_header"]
    assert mime["To"] == message["to"] and message["from"] in mime["From"]
    assert mime["List-Unsubscribe"].startswith("<http") and "/u/" in mime["List-Unsubscribe"]
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mime["X-Campaign"] == "spring"


def assert_dkim_intact(raw: bytes, key):
    """The bytes the provider received are the ones we signed: the DKIM signature still verifies."""
    public = key.txt_value().encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: public)


@pytest.fixture
def service_account():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "acme-mail", "private_key_id": "0123abcd",
            "private_key": pem, "client_email": "sender@acme-mail.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": GOOGLE_TOKEN}
    return info, private.public_key()


def _jwt_claims(assertion, public_key):
    header_b64, claims_b64, signature_b64 = assertion.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    public_key.verify(base64.urlsafe_b64decode(pad(signature_b64)), f"{header_b64}.{claims_b64}".encode(),
                      padding.PKCS1v15(), hashes.SHA256())
    return json.loads(base64.urlsafe_b64decode(pad(claims_b64)))


# --- Google Workspace ------------------------------------------------------------------------------

def test_gmail_sends_the_raw_mime_as_the_delegated_mailbox(api, workspace, run_workers, service_account):
    info, public_key = service_account
    mailbox = make_mailbox(workspace, "google_workspace", credentials={"service_account_json": json.dumps(info)})
    with responses.RequestsMock() as fake:
        token = fake.post(GOOGLE_TOKEN, json={"access_token": "ya29.a0-test", "expires_in": 3599,
                                              "token_type": "Bearer"})
        gmail = fake.post(GMAIL_SEND, json={"id": "18c2f0a1b2c3d4e5", "threadId": "18c2f0a1b2c3d4e5",
                                            "labelIds": ["SENT"]})
        first = send(api, run_workers, mailbox, headers={"X-Campaign": "spring"})
        second = send(api, run_workers, mailbox, to="other@example.org", headers={"X-Campaign": "spring"})

    assert first["status"] == "sent" and second["status"] == "sent"
    assert first["provider_message_id"] == "18c2f0a1b2c3d4e5"
    assert token.call_count == 1, "the access token is cached between sends"
    form = parse_qs(token.calls[0].request.body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = _jwt_claims(form["assertion"][0], public_key)
    assert claims["iss"] == info["client_email"] and claims["sub"] == mailbox.address
    assert claims["scope"] == "https://www.googleapis.com/auth/gmail.send" and claims["aud"] == GOOGLE_TOKEN
    request = gmail.calls[0].request
    assert request.headers["Authorization"] == "Bearer ya29.a0-test"
    raw = base64.urlsafe_b64decode(json.loads(request.body)["raw"])
    assert_contract_headers(parsed(raw), first)


def test_gmail_with_a_refresh_token_and_an_api_url_override(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "google_workspace", settings={"api_url": "https://gmail-proxy.acme.test/"},
                           credentials={"client_id": "cid.apps.googleusercontent.com", "client_secret": "csecret",
                                        "refresh_token": "1//refresh"})
    with responses.RequestsMock() as fake:
        token = fake.post(GOOGLE_TOKEN, json={"access_token": "ya29.refreshed", "expires_in": 3599})
        gmail = fake.post("https://gmail-proxy.acme.test/gmail/v1/users/me/messages/send",
                          json={"id": "18c2f0aaaa", "threadId": "18c2f0aaaa"})
        message = send(api, run_workers, mailbox)
    assert message["status"] == "sent" and message["provider_message_id"] == "18c2f0aaaa"
    form = parse_qs(token.calls[0].request.body)
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["1//refresh"]
    assert gmail.calls[0].request.headers["Authorization"] == "Bearer ya29.refreshed"


def test_gmail_quota_is_transient_and_a_bad_request_permanent(api, workspace, run_workers, service_account):
    info, _ = service_account
    mailbox = make_mailbox(workspace, "google_workspace", credentials={"service_account_json": info})
    with responses.RequestsMock() as fake:
        fake.post(GOOGLE_TOKEN, json={"access_token": "ya29.x", "expires_in": 3599})
        fake.post(GMAIL_SEND, status=429, json={"error": {"code": 429, "message": "Too many requests",
                                                          "status": "RESOURCE_EXHAUSTED"}})
        fake.post(GMAIL_SEND, json={"id": "18c2f0bbbb", "threadId": "18c2f0bbbb"})
        retried = send(api, run_workers, mailbox)
    with responses.RequestsMock() as fake:
        fake.post(GMAIL_SEND, status=400, json={"error": {"code": 400, "message": "Invalid To header",
                                                          "errors": [{"reason": "invalidArgument"}]}})
        failed = send(api, run_workers, mailbox, to="broken@example.com")
    assert retried["status"] == "sent"
    assert [e["type"] for e in retried["events"]] == ["message.accepted", "message.deferred", "message.sent"]
    assert failed["status"] == "failed" and "Invalid To header" in failed["provider_response"]


# --- Microsoft 365 ---------------------------------------------------------------------------------

def test_graph_sendmail_with_client_credentials(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "microsoft_365", credentials={
        "tenant_id": "tenant-123", "client_id": "app-id", "client_secret": "app-secret"})
    with responses.RequestsMock() as fake:
        token = fake.post(GRAPH_TOKEN, json={"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                             "access_token": "eyJ0eXAi.graph"})
        graph = fake.post(graph_send_url(mailbox.address), status=202, body=b"",
                          headers={"request-id": "6f8c2d6e-0000-4000-8000-000000000001"})
        message = send(api, run_workers, mailbox, headers={"X-Campaign": "spring"})
    assert message["status"] == "sent"
    assert message["provider_message_id"] == message["message_id_header"]
    form = parse_qs(token.calls[0].request.body)
    assert form["grant_type"] == ["client_credentials"] and form["client_id"] == ["app-id"]
    assert form["scope"] == ["https://graph.microsoft.com/.default"]
    request = graph.calls[0].request
    assert request.headers["Authorization"] == "Bearer eyJ0eXAi.graph"
    assert request.headers["Content-Type"] == "text/plain"
    assert_contract_headers(parsed(base64.b64decode(request.body)), message)


def test_graph_throttling_is_transient_and_honours_retry_after(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "microsoft_365", credentials={
        "tenant_id": "tenant-123", "client_id": "app-id", "client_secret": "app-secret"})
    with responses.RequestsMock() as fake:
        fake.post(GRAPH_TOKEN, json={"token_type": "Bearer", "expires_in": 3599, "access_token": "t"})
        fake.post(graph_send_url(mailbox.address), status=429, headers={"Retry-After": "120"},
                  json={"error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}})
        started = time.time()
        message = send(api, run_workers, mailbox)
    assert message["status"] == "deferred"
    deferred = message["events"][-1]
    assert deferred["type"] == "message.deferred" and "ApplicationThrottled" in deferred["data"]["reply"]
    from django.utils.dateparse import parse_datetime

    assert parse_datetime(deferred["data"]["retry_at"]).timestamp() >= started + 119


# --- Amazon SES (boto3 over HTTP to a loopback fake) -----------------------------------------------

def test_ses_sends_the_exact_signed_mime(api, workspace, run_workers, http_fake):
    http_fake.default = (200, {"Content-Type": "application/json", "x-amzn-RequestId": "req-1"},
                         json.dumps({"MessageId": "0102018c1f2e3d4c-11111111-2222-3333-4444-555555555555-000000"}))
    mailbox = make_mailbox(workspace, "ses", settings={"region": "eu-west-1", "api_url": http_fake.url},
                           credentials={"access_key_id": "AKIAEXAMPLE123", "secret_access_key": "wJalr/secret"})
    key = dkim_keys.generate_key(domain=mailbox.domain)
    message = send(api, run_workers, mailbox, headers={"X-Campaign": "spring"})
    assert message["status"] == "sent"
    assert message["provider_message_id"].startswith("0102018c1f2e3d4c")
    request = http_fake.requests[0]
    assert request.method == "POST" and request.path == "/v2/email/outbound-emails"
    authorization = request.headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE123/")
    assert "/eu-west-1/ses/aws4_request" in authorization
    body = json.loads(request.body)
    assert body["Destination"]["ToAddresses"] == ["prospect@example.com"]
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert_contract_headers(parsed(raw), message)
    assert_dkim_intact(raw, key)


def test_ses_throttling_is_transient_and_a_rejection_permanent(api, workspace, run_workers, http_fake):
    mailbox = make_mailbox(workspace, "ses", settings={"region": "eu-west-1", "api_url": http_fake.url},
                           credentials={"access_key_id": "AKIAEXAMPLE123", "secret_access_key": "wJalr/secret"})
    throttled = (429, {"Content-Type": "application/json", "x-amzn-ErrorType": "TooManyRequestsException"},
                 json.dumps({"message": "Maximum sending rate exceeded."}))
    ok = (200, {"Content-Type": "application/json"}, json.dumps({"MessageId": "0102-ok"}))
    rejected = (400, {"Content-Type": "application/json", "x-amzn-ErrorType": "MessageRejected"},
                json.dumps({"message": "Email address is not verified."}))
    http_fake.answers.extend([throttled, ok])
    retried = send(api, run_workers, mailbox)
    http_fake.answers.append(rejected)
    failed = send(api, run_workers, mailbox, to="x@example.com")
    assert retried["status"] == "sent" and retried["provider_message_id"] == "0102-ok"
    assert failed["status"] == "failed" and "MessageRejected" in failed["provider_response"]


# --- Mailgun (messages.mime) -----------------------------------------------------------------------

def _form_parts(request):
    """{field name: exact bytes} of a multipart/form-data body."""
    boundary = request.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
    parts = {}
    for chunk in request.body.split(b"--" + boundary)[1:-1]:
        head, _, value = chunk[2:].partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        parts[name] = value[:-2]  # the CRLF before the next boundary
    return parts


def test_mailgun_posts_our_mime_to_messages_mime(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "mailgun", settings={"domain": "mail.acme.com", "region": "eu"},
                           credentials={"api_key": "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"})
    key = dkim_keys.generate_key(domain=mailbox.domain)
    with responses.RequestsMock() as fake:
        call = fake.post("https://api.eu.mailgun.net/v3/mail.acme.com/messages.mime",
                         json={"id": "<placeholder>", "message": "Queued. Thank you."})
        message = send(api, run_workers, mailbox, headers={"X-Campaign": "spring"})
    assert message["status"] == "sent" and message["provider_message_id"] == "<placeholder>"
    request = call.calls[0].request
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"api:key-3ax6xnjp29jd6fds4gc373sgvjxteol0").decode()
    parts = _form_parts(request)
    assert parts["to"] == b"prospect@example.com"
    assert_contract_headers(parsed(parts["message"]), message)
    assert_dkim_intact(parts["message"], key)


def test_mailgun_errors(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "mailgun", settings={"domain": "mail.acme.com"},
                           credentials={"api_key": "key-x"})
    url = "https://api.mailgun.net/v3/mail.acme.com/messages.mime"
    with responses.RequestsMock() as fake:
        fake.post(url, status=503, body="Service Unavailable")
        fake.post(url, json={"id": "<20260101.1@mail.acme.com>", "message": "Queued. Thank you."})
        retried = send(api, run_workers, mailbox)
    with responses.RequestsMock() as fake:
        fake.post(url, status=401, body="Forbidden")
        failed = send(api, run_workers, mailbox, to="x@example.com")
    assert retried["status"] == "sent"
    assert failed["status"] == "failed" and failed["provider_response"].startswith("401")


# --- Postmark and SendGrid (structured: our headers carried over) -----------------------------------

def test_postmark_structured_send_keeps_our_headers(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "postmark", credentials={"server_token": "pm-server-token"})
    with responses.RequestsMock() as fake:
        call = fake.post("https://api.postmarkapp.com/email", json={
            "To": "prospect@example.com", "SubmittedAt": "2026-03-02T10:00:00.0000000-05:00",
            "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d", "ErrorCode": 0, "Message": "OK"})
        message = send(api, run_workers, mailbox, html="<p>Hi there</p>", headers={"X-Campaign": "spring"})
    assert message["status"] == "sent" and message["provider_message_id"] == "0a129aee-e1cd-480d-b08d-4f48548ff48d"
    request = call.calls[0].request
    assert request.headers["X-Postmark-Server-Token"] == "pm-server-token"
    body = json.loads(request.body)
    assert body["To"] == "prospect@example.com" and mailbox.address in body["From"]
    assert body["Subject"] == "Quick question"
    assert "Unsubscribe" in body["TextBody"] and "1 Rue de la Paix" in body["TextBody"]
    assert "Hi there" in body["HtmlBody"]
    headers = {h["Name"]: h["Value"] for h in body["Headers"]}
    assert headers["Message-ID"] == message["message_id_header"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in headers["List-Unsubscribe"] and headers["X-Campaign"] == "spring"


def test_postmark_inactive_recipient_is_permanent(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "postmark", credentials={"server_token": "pm-server-token"})
    with responses.RequestsMock() as fake:
        fake.post("https://api.postmarkapp.com/email", status=422, json={
            "ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as inactive. "
            "Found inactive addresses: prospect@example.com. Inactive recipients are ones that have generated "
            "a hard bounce, a spam complaint, or a manual suppression."})
        message = send(api, run_workers, mailbox)
    assert message["status"] == "failed"


def test_sendgrid_structured_send_keeps_our_headers(api, workspace, run_workers):
    mailbox = make_mailbox(workspace, "sendgrid", credentials={"api_key": "SG.test-key"})
    with responses.RequestsMock() as fake:
        call = fake.post("https://api.sendgrid.com/v3/mail/send", status=202, body=b"",
                         headers={"X-Message-Id": "Lm9tEhGiRFKb6oVqkY2K1w"})
        message = send(api, run_workers, mailbox, headers={"X-Campaign": "spring"})
    with responses.RequestsMock() as fake:
        fake.post("https://api.sendgrid.com/v3/mail/send", status=429, json={"errors": [{"message": "too many"}]})
        fake.post("https://api.sendgrid.com/v3/mail/send", status=202, body=b"")
        throttled = send(api, run_workers, mailbox, to="x@example.com")
    assert message["status"] == "sent" and "Lm9tEhGiRFKb6oVqkY2K1w" in message["provider_response"]
    request = call.calls[0].request
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    body = json.loads(request.body)
    assert body["personalizations"][0]["to"] == [{"email": "prospect@example.com"}]
    assert body["personalizations"][0]["custom_args"]["anymail_id"] == message["provider_message_id"]
    assert body["headers"]["Message-ID"] == message["message_id_header"]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["headers"]["X-Campaign"] == "spring"
    assert any(c["type"] == "text/plain" and "Unsubscribe" in c["value"] for c in body["content"])
    assert throttled["status"] == "sent"
    assert [e["type"] for e in throttled["events"]] == ["message.accepted", "message.deferred", "message.sent"]
