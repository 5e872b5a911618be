"""The transport interface every provider module implements, and its registry."""

from dataclasses import dataclass


class TransportError(Exception):
    def __init__(self, message: str, *, reply: str = ""):
        super().__init__(message)
        self.reply = reply or message


class TransientError(TransportError):
    """Try again later (4xx, throttling, connection trouble). `retry_after`: seconds the provider asked for."""

    def __init__(self, message: str, *, reply: str = "", retry_after: float | None = None):
        super().__init__(message, reply=reply)
        self.retry_after = retry_after


class PermanentError(TransportError):
    """The provider refused this message for good (5xx)."""


@dataclass
class OutgoingMessage:
    """What a transport hands off: the envelope and the finished MIME bytes."""

    mail_from: str
    rcpt_to: str
    data: bytes
    message_id: str
    mailbox_id: str = ""


@dataclass
class SendResult:
    provider_message_id: str
    response: str


class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


# In `send_many` streams: the transport wrote and now waits on the server; the caller's pause between messages.
TURN, PAUSE = _Marker("TURN"), _Marker("PAUSE")


class Transport:
    """One per ProviderConnection kind. `send` raises TransientError or PermanentError."""

    kind = ""

    def __init__(self, connection):
        self.connection = connection

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def send_many(self, items, *, turns=False):
        """(tag, OutgoingMessage) pairs in, (tag, SendResult or TransportError) out, in the same order.

        A generator: it takes the next pair only when it is ready to send it, so the caller may prepare
        each message as it goes. Close it (`contextlib.closing`) when stopping early. This default sends
        one at a time; a transport that can overlap messages (SMTP PIPELINING) overrides it.

        For a caller that runs several of these side by side (one per mailbox connection): a `PAUSE`
        among the items comes out again where it stands, and with `turns` a transport that writes to a
        server and then waits for its reply yields `TURN` in between, so that the caller can write to
        the other servers before waiting on this one."""
        for item in items:
            if item is PAUSE:
                yield PAUSE
                continue
            tag, message = item
            yield tag, outcome(self.send, message)

    def close(self):
        pass


def outcome(send, message):
    """What `send(message)` returned, or the TransportError it raised."""
    try:
        return send(message)
    except TransportError as exc:
        return exc


_REGISTRY = {}


def register(cls):
    _REGISTRY[cls.kind] = cls
    return cls


def load_transports():
    from providers import esp, google_workspace, microsoft_365, smtp  # noqa: F401  (register themselves)


def transport_for(connection) -> Transport:
    load_transports()
    try:
        cls = _REGISTRY[connection.kind]
    except KeyError:
        raise PermanentError(f"No transport for provider kind “{connection.kind}” yet.")
    return cls(connection)


HTTP_TIMEOUT_SECONDS = 30
TRANSIENT_HTTP_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


def retry_after_seconds(response) -> float | None:
    """The `Retry-After` header of an HTTP answer, in seconds (delta-seconds or an HTTP date)."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        import datetime as dt

        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def http_error(response, *, provider: str) -> TransportError:
    """Maps a non-2xx HTTP answer to TransientError (throttling, server trouble) or PermanentError."""
    body = (response.text or "")[:500].replace("\n", " ")
    reply = f"{response.status_code} {body}".strip()
    if response.status_code in TRANSIENT_HTTP_STATUSES or response.status_code >= 500:
        return TransientError(f"{provider} answered {response.status_code}; will retry: {body}", reply=reply,
                              retry_after=retry_after_seconds(response))
    return PermanentError(f"{provider} refused the message ({response.status_code}): {body}", reply=reply)


def http_post(url, *, provider: str, **kwargs):
    """POST with a timeout; connection trouble is transient."""
    import requests

    kwargs.setdefault("timeout", HTTP_TIMEOUT_SECONDS)
    try:
        return requests.post(url, **kwargs)
    except requests.RequestException as exc:
        raise TransientError(f"Could not reach {provider}: {exc.__class__.__name__}", reply=str(exc)[:500])


def api_url(connection, default: str) -> str:
    """The connection's `settings.api_url` (regional endpoints, proxies, test doubles) or the public endpoint."""
    return ((connection.settings or {}).get("api_url") or default).rstrip("/")
