"""SMTP hand-off: STARTTLS, implicit TLS or plain; auth; timeouts; one reused connection per mailbox,
its messages pipelined one into the next when the server offers PIPELINING."""

import functools
import re
import smtplib
import socket
import ssl
import threading
import time

from providers.base import (
    PAUSE, TURN, OutgoingMessage, PermanentError, SendResult, TransientError, Transport, TransportError, register,
)

TIMEOUT_SECONDS = 30  # per socket operation; settings.SMTP_TIMEOUT_SECONDS overrides it
IDLE_SECONDS = 60

_pool_lock = threading.Lock()
_connections: dict = {}  # (provider id, credentials fingerprint, mailbox id) -> (smtplib.SMTP, last used)


def timeout_seconds() -> float:
    """How long one SMTP step (connect, greeting, each command, the data) may take before the attempt
    is given up as transient: a server that accepts the connection and never answers must not hold
    a worker, or its mailbox, for longer."""
    from django.conf import settings

    return float(getattr(settings, "SMTP_TIMEOUT_SECONDS", TIMEOUT_SECONDS))


def _classify(code: int, text: str):
    reply = f"{code} {text}".strip()
    if 400 <= code < 500:
        return TransientError(f"The SMTP server deferred the message: {reply}", reply=reply)
    return PermanentError(f"The SMTP server refused the message: {reply}", reply=reply)


@functools.lru_cache(maxsize=2)
def _tls_context(*, verify: bool) -> ssl.SSLContext:
    """One TLS context per process and kind: loading the system's CA certificates costs tens of
    milliseconds, more than a whole SMTP transaction on a warm connection."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@register
class SmtpTransport(Transport):
    kind = "smtp"

    @functools.cached_property
    def _version(self):
        c = self.connection
        return (c.pk, c.settings.get("host"), c.settings.get("port"), str(c.updated_at))

    def _key(self, mailbox_id):
        """Which kept-open connection a mailbox's messages go over: a changed provider gets new ones."""
        return (*self._version, mailbox_id)

    def _open(self):
        settings = self.connection.settings
        host, port = settings["host"], int(settings["port"])
        security = settings.get("security") or "starttls"
        context = _tls_context(verify=settings.get("verify_tls") is not False) if security != "none" else None
        timeout = timeout_seconds()
        try:
            if security == "tls":
                client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            else:
                client = smtplib.SMTP(host, port, timeout=timeout)
                client.ehlo()
                if security == "starttls":
                    client.starttls(context=context)
                    client.ehlo()
            credentials = self.connection.credentials or {}
            if credentials.get("username"):
                client.login(credentials["username"], credentials["password"])
            client.ehlo_or_helo_if_needed()  # implicit TLS without login has not greeted yet
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(f"SMTP authentication failed: {exc.smtp_code} {exc.smtp_error!r}",
                                 reply=f"{exc.smtp_code} {exc.smtp_error!r}")
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, _text(exc.smtp_error))
        except (OSError, smtplib.SMTPException, socket.timeout) as exc:
            raise TransientError(f"Could not connect to {host}:{port}: {exc}")
        return client

    def _checkout(self, mailbox_id):
        key = self._key(mailbox_id)
        with _pool_lock:
            entry = _connections.pop(key, None)
        if entry is not None:
            client, last_used = entry
            if time.monotonic() - last_used < IDLE_SECONDS:
                return key, client
            _quit(client)
        return key, self._open()

    def _checkin(self, key, client):
        with _pool_lock:
            old = _connections.pop(key, None)
            _connections[key] = (client, time.monotonic())
        if old is not None:
            _quit(old[0])

    def send(self, message: OutgoingMessage) -> SendResult:
        [(_, result)] = self.send_many([(None, message)])
        if isinstance(result, TransportError):
            raise result
        return result

    def send_many(self, items, *, turns=False):
        """One message after another over each mailbox's connection (see `_Exchange`)."""
        exchange = _Exchange(self, turns=turns)
        try:
            for item in items:
                if item is PAUSE:
                    yield PAUSE
                    continue
                yield from exchange.add(*item)
            yield from exchange.end()
        finally:
            exchange.drop()  # stopped early: what is left of the exchange is abandoned


class _ConnectionLost(Exception):
    """The server hung up (or said it would: 421) before this message's content was written."""


class _Exchange:
    """Messages over one connection at a time, in the order given.

    A server that offers PIPELINING (RFC 2920) gets MAIL, RCPT and DATA in one write, and a message's
    content, its end and the next message's MAIL, RCPT and DATA in one write too (§3.1 lets message
    content open a command group): one round trip per message of a burst, where a server without it
    takes four. The server reads the next envelope while the caller records the last result. A
    message's content is written only once its envelope was accepted. A connection the server closed
    before a message's content was written (an idle one it dropped, a cap on messages per connection)
    is replaced once for that message; after its content was written, a lost connection is a
    transient failure, never a second copy.

    With `turns`, it yields TURN after each write that a reply must follow, before it reads the reply
    (see `Transport.send_many`)."""

    def __init__(self, transport, *, turns=False):
        self.transport = transport
        self.turns = turns
        self.key = self.client = None
        self.pending = None  # (tag, message) whose DATA the server accepted: its content goes with the next write

    def add(self, tag, message, *, again=False):
        if self.client is not None and self.key != self.transport._key(message.mailbox_id):
            yield from self.end()
        if self.client is None:
            try:
                self.key, self.client = self.transport._checkout(message.mailbox_id)
            except TransportError as exc:
                yield tag, exc
                return
        pipelining = self.client.has_extn("pipelining")
        commands = _envelope(message, smtputf8=self.client.has_extn("smtputf8"))
        pending, self.pending = self.pending, None
        if isinstance(commands, TransportError):  # nothing of it can be written: the last message ends alone
            if pending is not None:
                yield pending[0], (yield from self.content(pending[1]))
            yield tag, commands
            return
        try:
            if pipelining:
                self.client.send((_content(pending[1]) if pending else b"") + b"".join(commands))
                if self.turns:
                    yield TURN
                if pending is not None:
                    result = _final_reply(self.client, pending[1])
                    tag_before, pending = pending[0], None
                    yield tag_before, result
                    if _closing(result):
                        raise _ConnectionLost(result.reply)
                refusal = _envelope_refusal(self.client)
            else:
                refusal = _stepwise_envelope(self.client, commands)
            if _closing(refusal):
                raise _ConnectionLost(refusal.reply)
        except (OSError, smtplib.SMTPException, _ConnectionLost) as exc:
            self.drop()
            if pending is not None:  # its content was written: whether it arrived is not known
                yield pending[0], _lost(exc)
            if again:
                yield tag, _lost(exc)
            else:  # nothing of this message reached the server: once more, over a new connection
                yield from self.add(tag, message, again=True)
            return
        if refusal is not None:
            self.reset()
            yield tag, refusal
        elif pipelining:
            self.pending = (tag, message)
        else:
            yield tag, (yield from self.content(message))

    def content(self, message):
        """Writes the message's content and reads the server's answer to it (a generator that yields
        only TURN: `yield from` it for the result)."""
        try:
            self.client.send(_content(message))
            if self.turns:
                yield TURN
            result = _final_reply(self.client, message)
        except (OSError, smtplib.SMTPException) as exc:
            self.drop()
            return _lost(exc)
        if _closing(result):
            self.drop()
        return result

    def end(self):
        """Ends the last message and returns the connection to the pool."""
        pending, self.pending = self.pending, None
        result = (yield from self.content(pending[1])) if pending is not None else None
        if self.client is not None:
            self.transport._checkin(self.key, self.client)
            self.client = None
        if pending is not None:
            yield pending[0], result

    def reset(self):
        """RSET after a refused envelope; a connection that cannot is dropped."""
        try:
            code, _ = self.client.rset()
        except (OSError, smtplib.SMTPException):
            code = None
        if code != 250:
            self.drop()

    def drop(self):
        """Closes the connection without QUIT: the server may be waiting for a message's content, which
        it then discards."""
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self.client = None


def _closing(result) -> bool:
    """Whether a reply says the server is closing the connection (421): whatever comes next goes over a new one."""
    return isinstance(result, TransportError) and result.reply.startswith("421")


def _lost(exc) -> TransientError:
    if isinstance(exc, _ConnectionLost):
        return TransientError(f"The SMTP server closed the connection: {exc}", reply=str(exc))
    return TransientError(f"The SMTP connection failed: {exc}")


def _envelope(message, *, smtputf8: bool):
    """MAIL, RCPT and DATA as the lines to write, or the PermanentError of an address the server cannot
    take: an internationalised domain goes as its ASCII form (IDNA), a non-ASCII local part only to
    a server that offers SMTPUTF8 (RFC 6531), which the MAIL command then asks for."""
    sender, recipient = _envelope_address(message.mail_from, smtputf8), _envelope_address(message.rcpt_to, smtputf8)
    if sender is None or recipient is None:
        address = message.mail_from if sender is None else message.rcpt_to
        return PermanentError(f"The SMTP server does not offer SMTPUTF8, which the address {address} needs.",
                              reply=f"SMTPUTF8 not offered: {address}")
    utf8 = " SMTPUTF8" if not (sender + recipient).isascii() else ""
    return [f"MAIL FROM:{quoteaddr(sender)}{utf8}\r\n".encode(), f"RCPT TO:{quoteaddr(recipient)}\r\n".encode(),
            b"DATA\r\n"]


def _envelope_address(address: str, smtputf8: bool):
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return f"{local}@{domain}" if local.isascii() or smtputf8 else None


def _content(message) -> bytes:
    """The message's data, dot-stuffed, and the line that ends it."""
    body = _DOT_AT_LINE_START.sub(b"..", message.data)
    return body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n"


_ENVELOPE_ACCEPTED = ((250,), (250, 251), (354,))  # MAIL, RCPT, DATA


def _envelope_refusal(client):
    """Reads the replies to a pipelined MAIL, RCPT and DATA: None when the server waits for the content,
    else the error of the first refused step (after ending at once a DATA a broken server accepted
    regardless: with no valid recipient it must not deliver it)."""
    replies = [client.getreply() for _ in _ENVELOPE_ACCEPTED]
    refused = next((reply for reply, ok in zip(replies, _ENVELOPE_ACCEPTED) if reply[0] not in ok), None)
    if refused is None:
        return None
    if replies[2][0] == 354:
        client.send(b".\r\n")
        client.getreply()
    return _classify(refused[0], _text(refused[1]))


def _stepwise_envelope(client, commands):
    """MAIL, RCPT and DATA each awaiting its reply (a server without PIPELINING): None when the server
    waits for the content, else the error of the refused step."""
    for command, ok in zip(commands, _ENVELOPE_ACCEPTED):
        client.send(command)
        code, text = client.getreply()
        if code not in ok:
            return _classify(code, _text(text))
    return None


def _final_reply(client, message):
    """The reply to the end of a message's content: its SendResult, or the error it means."""
    code, text = client.getreply()
    if code != 250:
        return _classify(code, _text(text))
    return SendResult(provider_message_id=message.message_id, response=f"{code} {_text(text)}")


_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+")


def quoteaddr(address: str) -> str:
    """`smtplib.quoteaddr`, without parsing an address that is plainly `local@domain` (most of them;
    the parser costs more than the rest of the command)."""
    return f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _quit(client):
    try:
        client.quit()
    except Exception:  # noqa: BLE001 - closing a broken connection
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


def close_idle(max_idle: float = IDLE_SECONDS):
    now = time.monotonic()
    with _pool_lock:
        stale = [k for k, (_, used) in _connections.items() if now - used >= max_idle]
        clients = [_connections.pop(k)[0] for k in stale]
    for client in clients:
        _quit(client)
