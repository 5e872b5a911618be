"""Building the message the control plane sends (contract §4.7)."""

import functools
import hashlib
import hmac
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from django.conf import settings
from django.core import signing
from django.utils import timezone

# Headers a caller may not set: the control plane owns identity, threading ids and unsubscribe.
RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "sender", "reply-to-all", "message-id", "date", "subject", "list-unsubscribe",
    "list-unsubscribe-post", "dkim-signature", "return-path", "mime-version", "content-type",
    "content-transfer-encoding", "received",
}

UNSUBSCRIBE_SALT = "controlplane.unsubscribe"
# Lines up to RFC 5322's 998 characters: a List-Unsubscribe URL has nowhere to fold, and
# encoding it as an RFC 2047 word instead would break one-click unsubscribe in mail clients.
OUTGOING = SMTP.clone(max_line_length=998)


class _Signer(signing.Signer):
    """Django's Signer (same tokens, same checks), with the HMAC of its own key set up once: `salted_hmac`
    derives the key again for every value, about half the cost of signing a message's URL."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        derived = getattr(hashlib, self.algorithm)(signing.force_bytes(self.salt + "signer")
                                                   + signing.force_bytes(self.key)).digest()
        self._mac = hmac.new(derived, digestmod=self.algorithm)

    def signature(self, value, key=None):
        if key is not None and key != self.key:
            return super().signature(value, key)
        mac = self._mac.copy()
        mac.update(signing.force_bytes(value))
        return signing.b64_encode(mac.digest()).decode()


@functools.lru_cache(maxsize=4)
def _signer(secret_key, fallbacks) -> signing.Signer:
    return _Signer(key=secret_key, fallback_keys=list(fallbacks), salt=UNSUBSCRIBE_SALT)


def unsubscribe_signer() -> signing.Signer:
    """One signer per secret key (and fallbacks) rather than one per message."""
    return _signer(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def unsubscribe_token(message_id: str) -> str:
    return unsubscribe_signer().sign(message_id)


def message_id_from_token(token: str) -> str:
    """Raises signing.BadSignature for a forged or altered token."""
    return unsubscribe_signer().unsign(token)


def unsubscribe_url(message_id: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/u/{unsubscribe_token(message_id)}"


def message_id_header(message) -> str:
    return f"<{message.id}@{message.mailbox.domain.name}>"


def _footer_text(workspace, url):
    lines = [line for line in (workspace.sender_identification, workspace.postal_address) if line]
    lines.append(f"Don't want to hear from us again? Unsubscribe: {url}")
    return "\n\n--\n" + "\n".join(lines)


def _footer_html(workspace, url):
    from django.utils.html import escape

    parts = [escape(p).replace("\n", "<br>") for p in (workspace.sender_identification, workspace.postal_address) if p]
    parts.append(f'Don\'t want to hear from us again? <a href="{escape(url)}">Unsubscribe</a>')
    return '<div style="margin-top:2em;font-size:12px;color:#666">' + "<br>".join(parts) + "</div>"


_LOOK_UP = object()


def date_header(at) -> str:
    """The Date header for `at` (RFC 5322 has whole seconds): written once per second and offset."""
    return _date_header(at.replace(microsecond=0), at.utcoffset())


@functools.lru_cache(maxsize=64)
def _date_header(at, offset) -> str:
    return format_datetime(at)


# Printable ASCII without line breaks: such a header value needs neither RFC 2047 encoding nor folding.
_PLAIN = re.compile(r"[\x21-\x7e][\x20-\x7e]*\Z")


def build(message, *, now=None, dkim_key=_LOOK_UP) -> bytes:
    """The RFC 5322 bytes (CRLF) for `message`, DKIM-signed when its domain has an active key
    (pass `dkim_key`, possibly None, when the caller has already looked it up)."""
    mailbox = message.mailbox
    workspace = message.workspace
    url = unsubscribe_url(message.id)
    headers = [
        ("From", (mailbox.display_name or "", mailbox.address)),  # an Address only if the email package writes it
        ("To", message.to_address),
        ("Subject", message.subject),
        ("Date", date_header(now or timezone.now())),
        ("Message-ID", message.message_id_header or message_id_header(message)),
        ("List-Unsubscribe", f"<{url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        *(message.headers or {}).items(),
    ]
    text, html = message.text, message.html
    if message.workload == "cold":
        text += _footer_text(workspace, url)
        if html:
            html = html.replace("</body>", _footer_html(workspace, url) + "</body>") if "</body>" in html \
                else html + _footer_html(workspace, url)
    head = _plain_header_block(headers)
    data = None if head is None or html else _plain_text_body(text)
    if data is not None:
        data = head + data
    else:  # something to encode or fold, or an HTML part: the email package does it
        body = EmailMessage(policy=OUTGOING)
        if head is None:
            for name, value in headers:
                body[name] = Address(display_name=value[0], addr_spec=value[1]) if name == "From" else value
            head = b""
        body.set_content(text)
        if html:
            body.add_alternative(html, subtype="html")
        data = head + body.as_bytes(policy=OUTGOING)
    from mailboxes.dns import dkim

    key = dkim.active_key(mailbox.domain_id) if dkim_key is _LOOK_UP else dkim_key
    if key is not None:
        data = dkim.sign(data, key=key, domain_name=mailbox.domain.name) + data
    return data


_TEXT_HEAD = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\n\r\n'


def _plain_text_body(text: str):
    """The MIME part for an ASCII text body with lines of at most 998 characters, byte for byte what
    `EmailMessage.set_content` writes for it (7bit, CRLF line ends), without the email package's
    header objects; else None."""
    if not text.isascii():
        return None
    lines = text.encode("ascii").splitlines()
    if lines and max(map(len, lines)) > OUTGOING.max_line_length:
        return None
    return _TEXT_HEAD + b"\r\n".join(lines) + b"\r\n"


def _plain_header_block(headers):
    """The header lines as bytes when every value is plain ASCII on one line of at most 998 characters
    (the common case, and several times faster than the email package's header objects); else None."""
    lines = []
    for name, value in headers:
        if name == "From":
            display_name, address = value
            if not _PLAIN.match(display_name or "x") or not address.isascii():
                return None
            value = formataddr((display_name, address))
        line = f"{name}: {value}"
        if not _PLAIN.match(value) or len(line) > 998:
            return None
        lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
