"""ESP hand-off through django-anymail's backends, built per connection with that connection's credentials.

SES and Mailgun take the exact MIME we built (SESv2 SendEmail with Raw content; Mailgun's
`messages.mime`). Postmark and SendGrid only take structured messages: the text and HTML parts,
subject and addresses come from our MIME, and every header we set (Message-ID, List-Unsubscribe,
List-Unsubscribe-Post and the caller's headers) is passed through as a custom header.
"""

import email
import re
import threading
import warnings
from email import policy as email_policy

from django.core.mail import EmailMultiAlternatives

from providers.base import OutgoingMessage, PermanentError, SendResult, TransientError, Transport, register

# Headers an ESP writes itself from the structured fields (or must not be given).
_STRUCTURED_HEADERS = {"from", "to", "cc", "bcc", "subject", "date", "mime-version", "content-type",
                       "content-transfer-encoding", "dkim-signature"}
TRANSIENT_SES_CODES = {"TooManyRequestsException", "ThrottlingException", "LimitExceededException",
                       "SendingPausedException", "ServiceUnavailable", "InternalFailure", "RequestTimeout"}
MAILGUN_API = {"us": "https://api.mailgun.net/v3", "eu": "https://api.eu.mailgun.net/v3"}
TIMEOUT_SECONDS = 30


class _RawMime:
    """Stands in for the MIME object Django would build: serialises to exactly our bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def walk(self):
        return iter(())

    def as_bytes(self, *args, **kwargs):
        return self.data

    def __setitem__(self, name, value):
        raise PermanentError(f"Cannot add header {name} to an already built message.")


class RawMimeEmail(EmailMultiAlternatives):
    """A Django EmailMessage whose MIME is already built (and perhaps DKIM-signed)."""

    def __init__(self, *, raw: bytes, from_email: str, to: list):
        super().__init__(from_email=from_email, to=to)
        self.raw = raw

    def message(self, *args, **kwargs):
        return _RawMime(self.raw)


def structured_email(message: OutgoingMessage) -> EmailMultiAlternatives:
    """Our MIME taken apart into the fields an ESP's JSON API wants; our headers kept."""
    parsed = email.message_from_bytes(message.data, policy=email_policy.default)
    text_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    headers = {}
    for name, value in parsed.items():
        if name.lower() not in _STRUCTURED_HEADERS:
            headers[name] = str(value)
    result = EmailMultiAlternatives(
        subject=str(parsed.get("Subject", "")), body=text_part.get_content() if text_part else "",
        from_email=str(parsed.get("From") or message.mail_from), to=[message.rcpt_to], headers=headers,
    )
    if html_part is not None:
        result.attach_alternative(html_part.get_content(), "text/html")
    return result


def _api_url(connection, default):
    return ((connection.settings or {}).get("api_url") or default).rstrip("/") + "/"


def _backend(connection):
    credentials, settings = connection.credentials or {}, connection.settings or {}
    kind = connection.kind
    common = {"fail_silently": False, "timeout": TIMEOUT_SECONDS}
    if kind == "ses":
        from anymail.backends.amazon_ses import EmailBackend

        client_params = {"config": {"retries": {"total_max_attempts": 1}, "connect_timeout": 10,
                                    "read_timeout": TIMEOUT_SECONDS}}
        if settings.get("api_url"):
            client_params["endpoint_url"] = settings["api_url"]
        return EmailBackend(fail_silently=False, session_params={
            "aws_access_key_id": credentials.get("access_key_id"),
            "aws_secret_access_key": credentials.get("secret_access_key"),
            "region_name": settings.get("region"),
        }, client_params=client_params)
    if kind == "mailgun":
        default = MAILGUN_API.get(settings.get("region") or "us", MAILGUN_API["us"])
        return MailgunMimeBackend(api_key=credentials.get("api_key"), sender_domain=settings.get("domain"),
                                  api_url=_api_url(connection, default), **common)
    if kind == "postmark":
        from anymail.backends.postmark import EmailBackend

        return EmailBackend(server_token=credentials.get("server_token"),
                            api_url=_api_url(connection, "https://api.postmarkapp.com"), **common)
    if kind == "sendgrid":
        from anymail.backends.sendgrid import EmailBackend

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return EmailBackend(api_key=credentials.get("api_key"), generate_message_id=True,
                                api_url=_api_url(connection, "https://api.sendgrid.com/v3"), **common)
    raise PermanentError(f"{kind} is not an ESP kind.")


def _mailgun_backend_class():
    from anymail.backends.mailgun import EmailBackend, MailgunPayload

    class MailgunMimePayload(MailgunPayload):
        """`POST /v3/{domain}/messages.mime`: the recipient and our MIME as the `message` file."""

        def get_api_endpoint(self):
            return super().get_api_endpoint() + ".mime"

        def get_request_params(self, api_url):
            params = super().get_request_params(api_url)
            params["data"] = {"to": [r.addr_spec for r in self.all_recipients]}
            params["files"] = [("message", ("message.mime", self.message.raw, "message/rfc822"))]
            return params

    class Backend(EmailBackend):
        def build_message_payload(self, message, defaults):
            return MailgunMimePayload(message, defaults, self)

    return Backend


class _Lazy:
    cls = None


def MailgunMimeBackend(**kwargs):  # noqa: N802 - a class factory, imported lazily
    if _Lazy.cls is None:
        _Lazy.cls = _mailgun_backend_class()
    return _Lazy.cls(**kwargs)


def _status_and_body(exc):
    """(HTTP status or None, short reply text, SES error code) from an anymail error."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    code = ""
    if isinstance(response, dict):  # boto3 ClientError response
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", status)
        code = response.get("Error", {}).get("Code", "")
        text = f"{code}: {response.get('Error', {}).get('Message', '')}"
    elif response is not None and hasattr(response, "text"):
        status = status or response.status_code
        text = response.text[:500]
    else:
        text = str(exc).splitlines()[0][:500] if str(exc) else exc.__class__.__name__
    return status, text, code


def _classify(exc, provider):
    from anymail.exceptions import AnymailRecipientsRefused

    status, text, code = _status_and_body(exc)
    reply = f"{status} {text}".strip() if status else text
    if isinstance(exc, AnymailRecipientsRefused):
        return PermanentError(f"{provider} refused the recipient: {text}", reply=reply)
    if code in TRANSIENT_SES_CODES or status is None or status in (408, 429) or status >= 500:
        retry_after = None
        response = getattr(exc, "response", None)
        if response is not None and hasattr(response, "headers"):
            from providers.base import retry_after_seconds

            retry_after = retry_after_seconds(response)
        return TransientError(f"{provider} could not take the message now: {text}", reply=reply,
                              retry_after=retry_after)
    return PermanentError(f"{provider} refused the message: {text}", reply=reply)


class EspTransport(Transport):
    provider_name = ""
    raw_mime = True

    def send(self, message: OutgoingMessage) -> SendResult:
        from anymail.exceptions import AnymailError

        mail = RawMimeEmail(raw=message.data, from_email=message.mail_from, to=[message.rcpt_to]) \
            if self.raw_mime else structured_email(message)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                backend = _backend(self.connection)
                backend.send_messages([mail])
        except AnymailError as exc:
            raise _classify(exc, self.provider_name)
        except PermanentError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a broken connection inside the client library
            raise TransientError(f"{self.provider_name} hand-off failed: {exc.__class__.__name__}",
                                 reply=str(exc)[:500])
        status = mail.anymail_status
        provider_id = status.message_id
        if isinstance(provider_id, set):
            provider_id = next(iter(provider_id), None)
        response = f"{status.status and ','.join(sorted(status.status))} {self.provider_name} id {provider_id}"
        esp_response = status.esp_response
        extra = getattr(esp_response, "headers", {}).get("X-Message-Id") if esp_response is not None else None
        if extra:
            response += f" x-message-id {extra}"
        return SendResult(provider_message_id=str(provider_id or message.message_id), response=response.strip())


@register
class SesTransport(EspTransport):
    kind = "ses"
    provider_name = "Amazon SES"


@register
class MailgunTransport(EspTransport):
    kind = "mailgun"
    provider_name = "Mailgun"


@register
class PostmarkTransport(EspTransport):
    kind = "postmark"
    provider_name = "Postmark"
    raw_mime = False


@register
class SendGridTransport(EspTransport):
    kind = "sendgrid"
    provider_name = "SendGrid"
    raw_mime = False


# --- Provider callbacks (POST /hooks/{kind}/{provider_id}/) ---------------------------------------

def _json_body(request):
    import json

    from providers.callbacks import malformed

    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise malformed("The body is not valid JSON.")


def _basic_auth_challenge(connection, request, username_key="webhook_username", password_key="webhook_password"):
    """401 with a challenge when the connection has webhook credentials and the request sent none."""
    from providers.callbacks import CallbackError

    credentials = connection.credentials or {}
    if not credentials.get(username_key):
        return None
    if not request.META.get("HTTP_AUTHORIZATION"):
        raise CallbackError(401, "not_authenticated", "Send the webhook's basic-auth credentials.",
                            {"WWW-Authenticate": 'Basic realm="provider callbacks"'})
    return f"{credentials[username_key]}:{credentials.get(password_key, '')}"


def _run_anymail(view, request):
    """Anymail's own verification, then its parsing into AnymailTrackingEvents."""
    from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure

    from providers.callbacks import bad_signature, malformed

    try:
        view.run_validators(request)
    except AnymailWebhookValidationFailure as exc:
        raise bad_signature(str(exc).splitlines()[0])
    try:
        return view.parse_events(request)
    except (AnymailError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise malformed(f"The payload is not a {view.esp_name} event: {exc.__class__.__name__}")


def _canonical(anymail_event, *, hard):
    """An AnymailTrackingEvent in our event language (None for kinds we don't record, e.g. opens)."""
    from providers.callbacks import ProviderEvent

    kind = anymail_event.event_type
    event = ProviderEvent(
        type="", recipient=anymail_event.recipient or "", provider_message_id=str(anymail_event.message_id or ""),
        occurred_at=anymail_event.timestamp, provider_event_id=str(anymail_event.event_id or ""),
        description=anymail_event.description or "", diagnostic=anymail_event.mta_response or "",
    )
    if kind == "delivered":
        event.type = "message.delivered"
    elif kind == "deferred":
        event.type = "message.deferred"
    elif kind == "bounced":
        event.type, event.bounce_type = "message.bounced", "hard" if hard(anymail_event) else "soft"
    elif kind == "rejected":
        event.type = "message.bounced"
        event.bounce_type = "hard" if anymail_event.reject_reason in ("invalid", "bounced") else "soft"
        event.extra = {"rejected": True}
    elif kind == "complained":
        event.type = "message.complained"
    elif kind == "unsubscribed":
        event.type = "message.unsubscribed"
    else:
        return None
    return event


def _events(anymail_events, *, hard, message_id_header=lambda e: ""):
    from providers.callbacks import Parsed

    parsed = Parsed()
    for anymail_event in anymail_events:
        event = _canonical(anymail_event, hard=hard)
        if event is not None:
            event.message_id_header = message_id_header(anymail_event) or ""
            parsed.events.append(event)
    return parsed


def parse_mailgun(connection, request):
    """Mailgun tracking webhooks, HMAC-signed with the connection's webhook signing key."""
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView

    credentials = connection.credentials or {}
    if request.content_type == "application/json":
        body = _json_body(request)
        from providers.callbacks import malformed

        if not isinstance(body, dict) or not isinstance(body.get("event-data"), dict):
            raise malformed("A Mailgun webhook carries `signature` and `event-data`.")
    key = credentials.get("webhook_signing_key") or credentials.get("api_key")
    if not key:
        from providers.callbacks import bad_signature

        raise bad_signature("This connection has no webhook signing key: its callbacks cannot be verified.")
    view = MailgunTrackingWebhookView(webhook_signing_key=key, webhook_secret=[])
    events = _run_anymail(view, request)

    def hard(e):
        data = e.esp_event.get("event-data", {}) if isinstance(e.esp_event, dict) else {}
        return data.get("severity", "permanent") != "temporary"

    def header(e):
        data = e.esp_event.get("event-data", {}) if isinstance(e.esp_event, dict) else {}
        return (data.get("message", {}).get("headers", {}) or {}).get("message-id", "")

    return _events(events, hard=hard, message_id_header=header)


def parse_sendgrid(connection, request):
    """SendGrid's Event Webhook, signed with ECDSA (the connection's webhook verification key)."""
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView

    from providers.callbacks import bad_signature, malformed

    key = (connection.credentials or {}).get("webhook_verification_key")
    if not key:
        raise bad_signature("This connection has no webhook_verification_key: its callbacks cannot be verified.")
    body = _json_body(request)
    if not isinstance(body, list) or not all(isinstance(e, dict) and "event" in e for e in body):
        raise malformed("A SendGrid webhook carries a list of events.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            view = SendGridTrackingWebhookView(tracking_webhook_verification_key=key, webhook_secret=[])
        except ValueError:
            raise bad_signature("The connection's webhook_verification_key is not a public key.")
    events = _run_anymail(view, request)
    return _events(events, hard=lambda e: e.esp_event.get("type") != "blocked",
                   message_id_header=lambda e: e.esp_event.get("smtp-id", ""))


POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}


def parse_postmark(connection, request):
    """Postmark webhooks, authenticated with the basic-auth credentials in the webhook URL."""
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView

    from providers.callbacks import bad_signature, malformed

    expected = _basic_auth_challenge(connection, request)
    if expected is None:
        raise bad_signature("This connection has no webhook credentials: its callbacks cannot be verified.")
    body = _json_body(request)
    if not isinstance(body, dict) or "RecordType" not in body:
        raise malformed("A Postmark webhook carries one record with a RecordType.")
    view = PostmarkTrackingWebhookView(webhook_secret=[expected])
    events = _run_anymail(view, request)

    def hard(e):
        return e.esp_event.get("Type") in POSTMARK_HARD or e.esp_event.get("SuppressionReason") == "HardBounce"

    return _events(events, hard=hard)


# --- Amazon SES through SNS -------------------------------------------------------------------------

SNS_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SNS_SIGNED_FIELDS = {
    "Notification": ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
    "SubscriptionConfirmation": ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"],
    "UnsubscribeConfirmation": ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"],
}
_cert_lock = threading.Lock()
_certificates: dict = {}


def _sns_url_ok(url: str, *, path_suffix: str = "") -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    return parts.scheme == "https" and bool(SNS_CERT_HOST.match(parts.hostname or "")) \
        and parts.path.endswith(path_suffix)


def _sns_certificate(url: str):
    import requests
    from cryptography import x509

    from providers.callbacks import CallbackError, bad_signature

    with _cert_lock:
        if url in _certificates:
            return _certificates[url]
    if not _sns_url_ok(url, path_suffix=".pem"):
        raise bad_signature("SigningCertURL is not an Amazon SNS certificate URL.")
    try:
        response = requests.get(url, timeout=10)
    except requests.RequestException:
        raise CallbackError(503, "certificate_unavailable", "Could not fetch the SNS signing certificate; retry.")
    if response.status_code != 200:
        raise bad_signature("The SNS signing certificate could not be fetched.")
    try:
        certificate = x509.load_pem_x509_certificate(response.content)
    except ValueError:
        raise bad_signature("The SNS signing certificate is not a PEM certificate.")
    with _cert_lock:
        _certificates[url] = certificate
    return certificate


def verify_sns_signature(message: dict):
    """Amazon SNS message signatures (SignatureVersion 1: SHA1, 2: SHA256), per the SNS documentation."""
    import base64
    import binascii

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from providers.callbacks import bad_signature

    kind = message.get("Type")
    names = SNS_SIGNED_FIELDS.get(kind)
    if names is None:
        raise bad_signature(f"Unknown SNS message type {kind!r}.")
    version = str(message.get("SignatureVersion", ""))
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if algorithm is None:
        raise bad_signature("Unsupported SNS SignatureVersion.")
    text = "".join(f"{name}\n{message[name]}\n" for name in names if message.get(name) is not None)
    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
    except (binascii.Error, ValueError):
        raise bad_signature()
    certificate = _sns_certificate(message.get("SigningCertURL", ""))
    try:
        certificate.public_key().verify(signature, text.encode(), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, TypeError, ValueError):
        raise bad_signature()


def parse_ses(connection, request):
    """SES notifications or event publishing, delivered by SNS: signature verified, basic auth if configured."""
    import base64
    import json

    import requests
    from django.utils.crypto import constant_time_compare
    from django.utils.dateparse import parse_datetime

    from providers.callbacks import CallbackError, Parsed, ProviderEvent, bad_signature, malformed

    expected = _basic_auth_challenge(connection, request)
    if expected is not None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        try:
            scheme, _, value = header.partition(" ")
            given = base64.b64decode(value).decode() if scheme.lower() == "basic" else ""
        except (ValueError, UnicodeDecodeError):
            given = ""
        if not constant_time_compare(given, expected):
            raise CallbackError(401, "not_authenticated", "The webhook's basic-auth credentials are wrong.",
                                {"WWW-Authenticate": 'Basic realm="provider callbacks"'})
    message = _json_body(request)
    if not isinstance(message, dict) or not isinstance(message.get("Type"), str):
        raise malformed("An SNS message is a JSON object with a Type.")
    if request.META.get("HTTP_X_AMZ_SNS_MESSAGE_TYPE", message["Type"]) != message["Type"]:
        raise bad_signature("x-amz-sns-message-type does not match the body.")
    missing = [n for n in ("Message", "MessageId", "Timestamp", "TopicArn", "Signature", "SigningCertURL")
               if not message.get(n)]
    if missing:
        raise malformed(f"The SNS message lacks {', '.join(missing)}.")
    verify_sns_signature(message)
    region = (connection.settings or {}).get("region")
    topic_region = message["TopicArn"].split(":")[3] if message["TopicArn"].count(":") >= 5 else ""
    if region and topic_region and topic_region != region:
        raise bad_signature("The SNS topic is in another region than this connection.")

    if message["Type"] in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        if message["Type"] == "UnsubscribeConfirmation":
            return Parsed(note="unsubscribe confirmation ignored")
        url = message.get("SubscribeURL", "")
        if not _sns_url_ok(url):
            raise bad_signature("SubscribeURL is not an Amazon SNS URL.")
        try:
            answer = requests.get(url, timeout=10)
        except requests.RequestException:
            raise CallbackError(503, "confirmation_failed", "Could not confirm the SNS subscription; retry.")
        if answer.status_code != 200:
            raise CallbackError(502, "confirmation_failed", f"SNS answered {answer.status_code} to the confirmation.")
        return Parsed(note="subscription confirmed")

    try:
        notification = json.loads(message["Message"])
    except (TypeError, ValueError):
        return Parsed(note="not an SES notification")  # e.g. SES's "Successfully validated SNS topic" text
    if not isinstance(notification, dict):
        raise malformed("The SNS Message is not an SES notification.")
    kind = notification.get("eventType") or notification.get("notificationType")
    mail = notification.get("mail")
    if not kind or not isinstance(mail, dict):
        raise malformed("An SES notification carries eventType/notificationType and mail.")
    headers = mail.get("commonHeaders") or {}
    message_id_header = headers.get("messageId", "") if isinstance(headers, dict) else ""
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            message_id_header = header.get("value", message_id_header)
    base = {"provider_message_id": str(mail.get("messageId") or ""), "message_id_header": message_id_header,
            "provider_event_id": message["MessageId"]}
    parsed = Parsed()
    try:
        if kind == "Bounce":
            bounce = notification["bounce"]
            hard = bounce.get("bounceType") == "Permanent"
            for recipient in bounce["bouncedRecipients"]:
                parsed.events.append(ProviderEvent(
                    type="message.bounced", recipient=recipient["emailAddress"],
                    bounce_type="hard" if hard else "soft",
                    occurred_at=parse_datetime(bounce.get("timestamp") or message["Timestamp"]),
                    description=f"{bounce.get('bounceType')}: {bounce.get('bounceSubType')}",
                    diagnostic=recipient.get("diagnosticCode") or recipient.get("status") or "",
                    extra={"feedback_id": bounce.get("feedbackId", "")}, **base))
        elif kind == "Complaint":
            complaint = notification["complaint"]
            for recipient in complaint["complainedRecipients"]:
                parsed.events.append(ProviderEvent(
                    type="message.complained", recipient=recipient["emailAddress"],
                    occurred_at=parse_datetime(complaint.get("timestamp") or message["Timestamp"]),
                    description=complaint.get("complaintFeedbackType") or "", **base))
        elif kind == "Delivery":
            delivery = notification["delivery"]
            for recipient in delivery["recipients"]:
                parsed.events.append(ProviderEvent(
                    type="message.delivered", recipient=recipient,
                    occurred_at=parse_datetime(delivery.get("timestamp") or message["Timestamp"]),
                    diagnostic=delivery.get("smtpResponse") or "", **base))
        elif kind == "DeliveryDelay":
            delay = notification["deliveryDelay"]
            for recipient in delay["delayedRecipients"]:
                parsed.events.append(ProviderEvent(
                    type="message.deferred", recipient=recipient["emailAddress"],
                    occurred_at=parse_datetime(delay.get("timestamp") or message["Timestamp"]),
                    description=delay.get("delayType") or "", diagnostic=recipient.get("diagnosticCode") or "",
                    **base))
        elif kind == "Subscription":
            subscription = notification.get("subscription") or {}
            for recipient in mail.get("destination") or []:
                parsed.events.append(ProviderEvent(
                    type="message.unsubscribed", recipient=recipient,
                    occurred_at=parse_datetime(subscription.get("timestamp") or message["Timestamp"]), **base))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise malformed(f"The SES {kind} notification is incomplete: {exc.__class__.__name__}.")
    return parsed
