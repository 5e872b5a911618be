"""The transport interface every provider module implements, and its registry."""

from dataclasses import dataclass


class TransportError(Exception):
    def __init__(self, message: str, *, reply: str = ""):
        super().__init__(message)
        self.reply = reply or message


class TransientError(TransportError):
    """Try again later (4xx, throttling, connection trouble)."""


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


class Transport:
    """One per ProviderConnection kind. `send` raises TransientError or PermanentError."""

    kind = ""

    def __init__(self, connection):
        self.connection = connection

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def close(self):
        pass


_REGISTRY = {}


def register(cls):
    _REGISTRY[cls.kind] = cls
    return cls


def transport_for(connection) -> Transport:
    from providers import smtp  # noqa: F401  (registers itself)

    try:
        cls = _REGISTRY[connection.kind]
    except KeyError:
        raise PermanentError(f"No transport for provider kind “{connection.kind}” yet.")
    return cls(connection)
