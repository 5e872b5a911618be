"""SMTP hand-off: STARTTLS, implicit TLS or plain; auth; timeouts; one reused connection per mailbox."""

import functools
import re
import smtplib
import socket
import ssl
import threading
import time

from providers.base import OutgoingMessage, PermanentError, SendResult, TransientError, Transport, register

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

    def _key(self, mailbox_id):
        c = self.connection
        return (c.pk, c.settings.get("host"), c.settings.get("port"), str(c.updated_at), mailbox_id)

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
                return key, client, True
            _quit(client)
        return key, self._open(), False

    def _checkin(self, key, client):
        with _pool_lock:
            old = _connections.pop(key, None)
            _connections[key] = (client, time.monotonic())
        if old is not None:
            _quit(old[0])

    def send(self, message: OutgoingMessage) -> SendResult:
        key, client, reused = self._checkout(message.mailbox_id)
        try:
            try:
                reply = self._transaction(client, message)
            except smtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                _quit(client)
                client = self._open()
                reply = self._transaction(client, message)
        except (TransientError, PermanentError):
            self._reset_or_drop(key, client)
            raise
        except smtplib.SMTPResponseException as exc:
            _quit(client)
            raise _classify(exc.smtp_code, _text(exc.smtp_error))
        except (OSError, smtplib.SMTPException, socket.timeout) as exc:
            _quit(client)
            raise TransientError(f"The SMTP connection failed: {exc}")
        self._checkin(key, client)
        return SendResult(provider_message_id=message.message_id, response=reply)

    @staticmethod
    def _transaction(client, message) -> str:
        """MAIL, RCPT, DATA; a non-success reply at any step raises with that reply. A server that
        offers PIPELINING (RFC 2920) gets the three commands in one write: two round trips per
        message instead of four."""
        client.ehlo_or_helo_if_needed()
        if client.has_extn("pipelining"):
            return _pipelined(client, message)
        code, text = client.mail(message.mail_from)
        if code != 250:
            raise _classify(code, _text(text))
        code, text = client.rcpt(message.rcpt_to)
        if code not in (250, 251):
            raise _classify(code, _text(text))
        code, text = client.data(message.data)
        if code != 250:
            raise _classify(code, _text(text))
        return f"{code} {_text(text)}"

    def _reset_or_drop(self, key, client):
        try:
            client.rset()
        except Exception:  # noqa: BLE001 - the connection is unusable: drop it
            _quit(client)
            return
        self._checkin(key, client)


def _pipelined(client, message) -> str:
    """MAIL, RCPT and DATA sent together, their replies read in order (RFC 2920); the first failure
    is the one reported. A server that accepts DATA after refusing the sender or the recipient gets
    an empty message ended at once, which it must not deliver (no valid recipient)."""
    client.send(f"MAIL FROM:{quoteaddr(message.mail_from)}\r\nRCPT TO:{quoteaddr(message.rcpt_to)}\r\nDATA\r\n")
    mail, rcpt, data = client.getreply(), client.getreply(), client.getreply()
    refused = next((reply for reply, ok in ((mail, (250,)), (rcpt, (250, 251)), (data, (354,)))
                    if reply[0] not in ok), None)
    if refused is not None:
        if data[0] == 354:
            client.send(b".\r\n")
            client.getreply()
        raise _classify(refused[0], _text(refused[1]))
    body = _DOT_AT_LINE_START.sub(b"..", message.data)
    client.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
    code, text = client.getreply()
    if code != 250:
        raise _classify(code, _text(text))
    return f"{code} {_text(text)}"


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
