"""Bounces that arrive in a mailbox's inbox as delivery status notifications (RFC 3464), read over IMAP.

For mailbox providers (SMTP, Google Workspace, Microsoft 365) the remote servers' bounces come back
to the sending mailbox. `scan_mailbox` (an RQ job) opens the inbox read-only (EXAMINE), looks only
at new UIDs since the last scan, fetches just the Content-Type of each and then, for
`multipart/report; report-type=delivery-status` only, the whole DSN with BODY.PEEK (nothing is
marked seen, moved or deleted). Each failed recipient is a bounce: status 5.x.x hard, 4.x.x soft;
"delayed" is a deferral. DSNs are matched to our messages by the original Message-ID (or, when a
server strips it, by recipient among this mailbox's recent sends).
"""

import datetime as dt
import email
import imaplib
import logging
import re
import ssl
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesHeaderParser, HeaderParser

from django.utils import timezone

from audit.context import Actor, acting_as
from providers.callbacks import ProviderEvent, match_message, record

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 30
BATCH = 200  # messages looked at per scan; the next scan goes on from there
FALLBACK_MATCH_DAYS = 30
_FETCH_UID = re.compile(rb"UID (\d+)")


@dataclass
class DsnRecipient:
    recipient: str
    action: str
    status: str
    diagnostic: str = ""

    @property
    def event(self):
        """(canonical type, bounce type) or None when this recipient's report is not a problem."""
        if self.action == "delayed":
            return "message.deferred", ""
        if self.action != "failed":
            return None
        return "message.bounced", "soft" if self.status.startswith("4") else "hard"


@dataclass
class Dsn:
    recipients: list
    original_message_id: str = ""
    reporting_mta: str = ""


def _fields(block) -> dict:
    return {k.lower(): str(v).strip() for k, v in block.items()}


def _blocks(part):
    """The field groups of a message/delivery-status part (the parser may or may not have split them)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [_fields(block) for block in payload]
    text = payload if isinstance(payload, str) else part.get_payload(decode=True).decode(errors="replace")
    return [_fields(HeaderParser().parsestr(chunk.strip() + "\n"))
            for chunk in re.split(r"\r?\n\s*\r?\n", text) if chunk.strip()]


def _address(value: str) -> str:
    kind, _, address = value.partition(";")
    return (address if address else kind).strip().strip("<>").lower()


def parse_dsn(raw: bytes) -> Dsn | None:
    """An RFC 3464 report's recipients and the original Message-ID, or None if `raw` is not a DSN."""
    message = email.message_from_bytes(raw, policy=email_policy.default)
    if message.get_content_type() != "multipart/report" or \
            (message.get_param("report-type") or "").lower() != "delivery-status":
        return None
    dsn = Dsn(recipients=[])
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _blocks(part)
            if blocks:
                dsn.reporting_mta = _address(blocks[0].get("reporting-mta", ""))
            for block in blocks:
                recipient = block.get("final-recipient") or block.get("original-recipient")
                if not recipient or "action" not in block:
                    continue
                status = block.get("status", "").split()[0] if block.get("status") else ""
                dsn.recipients.append(DsnRecipient(recipient=_address(recipient), action=block["action"].lower(),
                                                   status=status, diagnostic=block.get("diagnostic-code", "")))
        elif content_type in ("message/rfc822", "message/global") and not dsn.original_message_id:
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if hasattr(inner, "get"):
                dsn.original_message_id = str(inner.get("Message-ID", "") or "").strip()
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers") and not dsn.original_message_id:
            headers = part.get_payload(decode=True) or b""
            dsn.original_message_id = str(BytesHeaderParser().parsebytes(headers).get("Message-ID", "") or "").strip()
    return dsn


def is_report(content_type_header: bytes) -> bool:
    parsed = BytesHeaderParser(policy=email_policy.default).parsebytes(content_type_header)
    return parsed.get_content_type() == "multipart/report" and \
        (parsed.get_param("report-type") or "").lower() == "delivery-status"


# --- Recording -----------------------------------------------------------------------------------

def record_dsn(*, mailbox, dsn: Dsn, event_key: str) -> list:
    """Records each problem recipient of `dsn` against the message it reports on; returns those messages."""
    from controlplane.models import HANDED_OFF_STATUSES, Message

    matched = []
    for item in dsn.recipients:
        kind = item.event
        if kind is None:
            continue
        event = ProviderEvent(type=kind[0], bounce_type=kind[1], recipient=item.recipient,
                              message_id_header=dsn.original_message_id,
                              provider_event_id=f"{event_key}:{item.recipient}",
                              description=f"{item.action} {item.status}".strip(), diagnostic=item.diagnostic,
                              extra={"reporting_mta": dsn.reporting_mta} if dsn.reporting_mta else {})
        message = match_message(mailbox.workspace, event, mailbox=mailbox) if dsn.original_message_id else None
        if message is None:
            since = timezone.now() - dt.timedelta(days=FALLBACK_MATCH_DAYS)
            message = (Message.objects.filter(mailbox=mailbox, to_address__iexact=item.recipient,
                                              status__in=HANDED_OFF_STATUSES, sent_at__gte=since)
                       .order_by("-sent_at").first())
        if message is None:
            continue
        if record(workspace=mailbox.workspace, event=event, source=f"imap:{mailbox.pk}", message=message):
            matched.append(message)
    return matched


# --- Reading the inbox ---------------------------------------------------------------------------

def _login_details(mailbox):
    """(host, port, security, username, secret, method) for the mailbox's inbox, or None if not configured."""
    connection = mailbox.provider
    settings = connection.settings or {}
    if connection.kind == "smtp":
        if not settings.get("imap_host"):
            return None
        credentials = connection.credentials or {}
        return (settings["imap_host"], int(settings.get("imap_port") or 993), settings.get("imap_security") or "tls",
                credentials.get("username") or mailbox.address, credentials.get("password", ""), "password")
    if connection.kind == "google_workspace":
        from providers import google_workspace

        return (*google_workspace.imap_login(connection, mailbox), "xoauth2")
    if connection.kind == "microsoft_365":
        from providers import microsoft_365

        return (*microsoft_365.imap_login(connection, mailbox), "xoauth2")
    return None


def _open(host, port, security, username, secret, method):
    if security == "tls":
        client = imaplib.IMAP4_SSL(host, port, ssl_context=ssl.create_default_context(), timeout=TIMEOUT_SECONDS)
    else:
        client = imaplib.IMAP4(host, port, timeout=TIMEOUT_SECONDS)
        if security == "starttls":
            client.starttls(ssl_context=ssl.create_default_context())
    if method == "xoauth2":
        client.authenticate("XOAUTH2", lambda _: f"user={username}\x01auth=Bearer {secret}\x01\x01".encode())
    else:
        client.login(username, secret)
    return client


def _fetched(data):
    """{uid: bytes} from an imaplib FETCH answer."""
    found = {}
    for item in data or []:
        if isinstance(item, tuple) and len(item) == 2:
            match = _FETCH_UID.search(item[0])
            if match:
                found[int(match.group(1))] = item[1]
    return found


def scan_mailbox(mailbox_id: str) -> dict:
    """Reads new DSNs from one mailbox's inbox (an RQ job). Read-only: EXAMINE and BODY.PEEK."""
    from controlplane.models import BounceScanState
    from mailboxes.models import Mailbox

    mailbox = Mailbox.objects.select_related("provider", "workspace").filter(pk=mailbox_id).first()
    if mailbox is None:
        return {"skipped": "no such mailbox"}
    with acting_as(Actor("system", mailbox.pk, f"IMAP bounce reader ({mailbox.address})")):
        state, _ = BounceScanState.objects.get_or_create(mailbox=mailbox)
        try:
            details = _login_details(mailbox)
            if details is None:
                return {"skipped": "no IMAP configured"}
            result = _scan(mailbox, state, details)
        except (imaplib.IMAP4.error, OSError, ssl.SSLError, Exception) as exc:  # noqa: BLE001 - recorded, next scan retries
            message = getattr(exc, "reply", None) or f"{exc.__class__.__name__}: {exc}"
            BounceScanState.objects.filter(pk=state.pk).update(last_error=str(message)[:2000],
                                                              last_checked_at=timezone.now())
            logger.warning("IMAP bounce scan of %s failed: %s", mailbox.address, message)
            return {"error": str(message)[:500]}
        return result


def _scan(mailbox, state, details):
    from controlplane.models import BounceScanState

    client = _open(*details)
    try:
        typ, _ = client.select("INBOX", readonly=True)
        if typ != "OK":
            raise imaplib.IMAP4.error("Could not open INBOX read-only.")
        uidvalidity = int((client.response("UIDVALIDITY")[1] or [b"0"])[0] or 0)
        last_uid = state.last_uid if state.uidvalidity == uidvalidity else 0
        since = (mailbox.created_at - dt.timedelta(days=1)).strftime("%d-%b-%Y")
        typ, data = client.uid("SEARCH", "UID", f"{last_uid + 1}:*", "SINCE", since)
        uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > last_uid)[:BATCH] if typ == "OK" else []
        found = bounces = 0
        if uids:
            typ, data = client.uid("FETCH", ",".join(map(str, uids)), "(BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])")
            reports = [uid for uid, header in sorted(_fetched(data).items()) if is_report(header)]
            for uid in reports:
                typ, data = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
                raw = _fetched(data).get(uid)
                dsn = parse_dsn(raw) if raw else None
                if dsn is None:
                    continue
                found += 1
                bounces += len(record_dsn(mailbox=mailbox, dsn=dsn, event_key=f"imap:{uidvalidity}:{uid}"))
        BounceScanState.objects.filter(pk=state.pk).update(
            uidvalidity=uidvalidity, last_uid=max([last_uid, *uids]), last_checked_at=timezone.now(), last_error="",
            bounces_found=state.bounces_found + bounces)
        return {"looked_at": len(uids), "reports": found, "recorded": bounces}
    finally:
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - the server may already have closed
            pass


def enqueue_all() -> int:
    """Queues a scan of every mailbox whose inbox the reader can open (the periodic job)."""
    from controlplane.queues import queue
    from mailboxes.models import Mailbox
    from providers.kinds import IMAP_KINDS

    count = 0
    mailboxes = Mailbox.objects.filter(provider__kind__in=IMAP_KINDS).exclude(status="retired").select_related("provider")
    for mailbox in mailboxes:
        if mailbox.provider.kind == "smtp" and not (mailbox.provider.settings or {}).get("imap_host"):
            continue
        queue("default").enqueue(scan_mailbox, mailbox.pk, job_id=f"imap-bounces-{mailbox.pk}", result_ttl=0)
        count += 1
    return count
