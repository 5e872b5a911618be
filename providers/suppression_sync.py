"""ESP suppression sync: each SES, Postmark and SendGrid connection's suppression list imported into its
workspace's list, and our removals pushed back, so the two never disagree silently.

For every address on the provider's list: when our workspace removed it after the provider listed it, the
removal is pushed (deleted at the provider); otherwise it is added to our list (source `provider_sync`,
the provider's reason and time) unless already there. What the provider refuses to delete is recorded on
the connection's `ProviderSuppressionSync` row and shown in the admin; the next run tries again.
"""

import datetime as dt
import logging
from dataclasses import dataclass
from urllib.parse import quote

import requests
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.context import Actor, acting_as
from providers.esp import _api_url
from providers.models import ProviderConnection

logger = logging.getLogger(__name__)

SYNC_KINDS = {"ses", "postmark", "sendgrid"}
SOURCE = "provider_sync"
TIMEOUT_SECONDS = 30
PAGE_SIZE = 500
POSTMARK_STREAM = "outbound"  # the stream Postmark sends to when a message names none, as ours do


class SyncError(Exception):
    """The provider could not be read or refused a change; the message says why."""

    def __init__(self, message, code=""):
        super().__init__(message)
        self.code = code


@dataclass
class ProviderEntry:
    address: str
    reason: str  # ours: hard_bounce, complaint, unsubscribe, manual
    at: dt.datetime
    list_name: str = ""  # where the provider keeps it (SendGrid has one list per reason)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _http_error(provider, response):
    return SyncError(f"{provider} answered {response.status_code}: {response.text[:300]}")


class SesClient:
    """SESv2 ListSuppressedDestinations / DeleteSuppressedDestination (the account-level list of the region)."""

    REASONS = {"BOUNCE": "hard_bounce", "COMPLAINT": "complaint"}

    def __init__(self, connection):
        import boto3
        from botocore.config import Config

        credentials, settings = connection.credentials or {}, connection.settings or {}
        session = boto3.session.Session(aws_access_key_id=credentials.get("access_key_id"),
                                        aws_secret_access_key=credentials.get("secret_access_key"),
                                        region_name=settings.get("region"))
        self.client = session.client(
            "sesv2", endpoint_url=settings.get("api_url") or None,
            config=Config(retries={"total_max_attempts": 2}, connect_timeout=10, read_timeout=TIMEOUT_SECONDS))

    def _call(self, method, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise SyncError(f"Amazon SES: {error.get('Code', '?')}: {error.get('Message', '')}", error.get("Code", ""))
        except BotoCoreError as exc:
            raise SyncError(f"Amazon SES: {exc}")

    def entries(self):
        token = None
        while True:
            page = self._call("list_suppressed_destinations", PageSize=PAGE_SIZE,
                              **({"NextToken": token} if token else {}))
            for item in page.get("SuppressedDestinationSummaries", []):
                yield ProviderEntry(item["EmailAddress"], self.REASONS.get(item.get("Reason"), "hard_bounce"),
                                    _utc(item["LastUpdateTime"]))
            token = page.get("NextToken")
            if not token:
                return

    def delete(self, entries) -> dict:
        problems = {}
        for entry in entries:
            try:
                self._call("delete_suppressed_destination", EmailAddress=entry.address)
            except SyncError as exc:
                if exc.code != "NotFoundException":  # already gone
                    problems[entry.address] = str(exc)
        return problems


class PostmarkClient:
    """`GET /message-streams/{stream}/suppressions/dump`, `POST …/suppressions/delete` (Postmark keeps
    spam complaints: it answers `Failed` for those)."""

    def __init__(self, connection):
        self.base = _api_url(connection, "https://api.postmarkapp.com") + f"message-streams/{POSTMARK_STREAM}/"
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "X-Postmark-Server-Token":
                                     (connection.credentials or {}).get("server_token", "")})

    def _request(self, method, path, **kwargs):
        try:
            response = self.session.request(method, self.base + path, timeout=TIMEOUT_SECONDS, **kwargs)
        except requests.RequestException as exc:
            raise SyncError(f"Postmark could not be reached: {exc.__class__.__name__}")
        if response.status_code != 200:
            raise _http_error("Postmark", response)
        return response.json()

    @staticmethod
    def _reason(item):
        kind = item.get("SuppressionReason")
        if kind == "HardBounce":
            return "hard_bounce"
        if kind == "SpamComplaint":
            return "complaint"
        return "unsubscribe" if item.get("Origin") == "Recipient" else "manual"

    def entries(self):
        from django.utils.dateparse import parse_datetime

        for item in self._request("GET", "suppressions/dump").get("Suppressions", []):
            yield ProviderEntry(item["EmailAddress"], self._reason(item), _utc(parse_datetime(item["CreatedAt"])))

    def delete(self, entries) -> dict:
        problems = {}
        entries = list(entries)
        for start in range(0, len(entries), 50):
            batch = entries[start:start + 50]
            try:
                answer = self._request("POST", "suppressions/delete",
                                       json={"Suppressions": [{"EmailAddress": e.address} for e in batch]})
            except SyncError as exc:
                problems.update({e.address: str(exc) for e in batch})
                continue
            for result in answer.get("Suppressions", []):
                if result.get("Status") == "Failed":
                    problems[result.get("EmailAddress", "?")] = f"Postmark: {result.get('Message') or 'refused'}"
        return problems


class SendGridClient:
    """`/v3/suppression/bounces`, `/spam_reports` and `/unsubscribes` (global unsubscribes, deleted through
    `/v3/asm/suppressions/global/{email}`)."""

    LISTS = {"bounces": "hard_bounce", "spam_reports": "complaint", "unsubscribes": "unsubscribe"}
    DELETE_PATHS = {"bounces": "suppression/bounces/", "spam_reports": "suppression/spam_reports/",
                    "unsubscribes": "asm/suppressions/global/"}

    def __init__(self, connection):
        self.base = _api_url(connection, "https://api.sendgrid.com/v3")
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json",
                                     "Authorization": f"Bearer {(connection.credentials or {}).get('api_key', '')}"})

    def _request(self, method, path, **kwargs):
        try:
            return self.session.request(method, self.base + path, timeout=TIMEOUT_SECONDS, **kwargs)
        except requests.RequestException as exc:
            raise SyncError(f"SendGrid could not be reached: {exc.__class__.__name__}")

    def entries(self):
        for list_name, reason in self.LISTS.items():
            offset = 0
            while True:
                response = self._request("GET", f"suppression/{list_name}",
                                         params={"limit": PAGE_SIZE, "offset": offset})
                if response.status_code != 200:
                    raise _http_error("SendGrid", response)
                page = response.json()
                for item in page:
                    yield ProviderEntry(item["email"], reason,
                                        dt.datetime.fromtimestamp(int(item["created"]), dt.timezone.utc), list_name)
                if len(page) < PAGE_SIZE:
                    break
                offset += PAGE_SIZE

    def delete(self, entries) -> dict:
        problems = {}
        for entry in entries:
            try:
                response = self._request("DELETE", self.DELETE_PATHS[entry.list_name] + quote(entry.address, safe="@"))
            except SyncError as exc:
                problems[entry.address] = str(exc)
                continue
            if response.status_code not in (200, 204, 404):  # 404: already gone
                problems[entry.address] = str(_http_error("SendGrid", response))
        return problems


CLIENTS = {"ses": SesClient, "postmark": PostmarkClient, "sendgrid": SendGridClient}


def sync_connection(connection_id: str) -> dict:
    """Syncs one connection's suppression list both ways (an RQ job)."""
    from suppression import services as suppression
    from suppression.models import ProviderSuppressionSync

    connection = ProviderConnection.objects.select_related("workspace").filter(pk=connection_id).first()
    if connection is None or connection.kind not in SYNC_KINDS:
        return {"skipped": "not an ESP connection with a suppression list"}
    workspace = connection.workspace
    with acting_as(Actor("system", connection.pk, f"suppression sync ({connection.name})")):
        state, _ = ProviderSuppressionSync.objects.get_or_create(connection=connection,
                                                                 defaults={"workspace": workspace})
        started = timezone.now()
        try:
            client = CLIENTS[connection.kind](connection)
            listed = list(client.entries())
        except (SyncError, KeyError, TypeError, ValueError) as exc:
            message = str(exc) if isinstance(exc, SyncError) else f"Unexpected answer: {exc.__class__.__name__}"
            ProviderSuppressionSync.objects.filter(pk=state.pk).update(last_run_at=started, last_error=message[:2000])
            logger.warning("Suppression sync of %s failed: %s", connection, message)
            return {"error": message}

        to_push, to_import = _split(workspace, listed)
        result = suppression.import_synced(
            workspace=workspace, entries=[(e.address, e.reason, e.at) for e in to_import], source=SOURCE,
            note=f"{connection.name} ({connection.get_kind_display()})",
            audit_after={"connection": connection.pk, "listed": len(listed)})
        problems = client.delete(to_push) if to_push else {}
        pushed = sorted({e.address for e in to_push} - set(problems))
        not_pushed = [{"address": audit.pseudonym(address), "problem": problem[:500]}
                      for address, problem in sorted(problems.items())]
        with transaction.atomic():
            ProviderSuppressionSync.objects.filter(pk=state.pk).update(
                last_run_at=started, last_success_at=timezone.now(), listed=len(listed), imported=result.created,
                pushed=len(pushed), not_pushed=not_pushed, last_error="")
            if to_push:
                audit.record(workspace=workspace, action="suppression.removals_pushed", obj=connection,
                             after={"pushed": [audit.pseudonym(a) for a in pushed], "not_pushed": not_pushed})
    return {"listed": len(listed), "imported": result.created, "pushed": len(pushed), "not_pushed": len(not_pushed)}


def _split(workspace, listed):
    """(entries to delete at the provider, entries to import): a provider entry older than our latest
    removal of that address, while the address is not on our list again, is a removal to push."""
    from suppression import services as suppression

    hashes = {}
    for entry in listed:
        try:
            hashes[id(entry)] = suppression.value_hash(suppression.normalise(entry.address))
        except suppression.InvalidValue:
            continue
    removals = suppression.latest_removals(workspace, set(hashes.values()))
    present = suppression.present_hashes(workspace, set(removals)) if removals else set()
    to_push, to_import = [], []
    for entry in listed:
        digest = hashes.get(id(entry))
        removed_at = removals.get(digest)
        if removed_at is not None and removed_at > entry.at and digest not in present:
            to_push.append(entry)
        else:
            to_import.append(entry)
    return to_push, to_import


def request_sync(connection):
    """Queues a sync of one connection now (the admin action); audited."""
    from controlplane.queues import queue

    audit.record(workspace=connection.workspace, action="provider.suppression_sync_requested", obj=connection)
    transaction.on_commit(lambda: queue("default").enqueue(
        sync_connection, connection.pk, job_id=f"suppression-sync-{connection.pk}", result_ttl=0))


def enqueue_all() -> int:
    """Queues a sync of every SES, Postmark and SendGrid connection with credentials (the periodic job)."""
    from controlplane.queues import queue

    count = 0
    for connection_id in (ProviderConnection.objects.filter(kind__in=SYNC_KINDS, credentials_updated_at__isnull=False)
                          .values_list("pk", flat=True)):
        queue("default").enqueue(sync_connection, connection_id, job_id=f"suppression-sync-{connection_id}",
                                 result_ttl=0)
        count += 1
    return count
