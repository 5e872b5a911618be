"""The one writer of the audit log (`record`) and its verifier (`verify`)."""

import datetime as dt
import decimal
import hashlib
import json
from dataclasses import dataclass

from django.db import models, transaction
from django.utils import timezone

from audit import context
from audit.models import AuditChain, AuditEvent

REDACTED = "[redacted]"
CHANGED = "[changed]"
# Values that say what happened to a secret without carrying it.
SECRET_MARKERS = {REDACTED, CHANGED, "[set]", "[none]"}
GENESIS = "0" * 64

# Field names whose values never reach the audit log, at any depth.
SECRET_KEYS = {
    "credentials", "password", "secret", "api_key", "token", "hashed_key", "private_key",
    "client_secret", "refresh_token", "secret_access_key", "server_token", "service_account_json",
    "webhook_password", "webhook_signing_key", "webhook_verification_key", "dkim_private_key",
}


def pseudonym(address: str) -> str:
    """How the audit log names a recipient: recognisable to someone who knows the address
    (`j***@acme.com`, SHA-256 prefix), never the address itself, so an erasure leaves nothing to scrub."""
    value = (address or "").strip().lower()
    if not value:
        return ""
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    if value.startswith("@"):
        return value
    local, _, domain = value.rpartition("@")
    return f"{local[:1]}***@{domain} (sha256:{digest})"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, models.Model):
        return str(value.pk)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def redact(value):
    """Secret-named keys keep their presence, never their value."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS:
                keep = item in (None, "", {}) or (isinstance(item, str) and item in SECRET_MARKERS)
                out[key] = item if keep else REDACTED
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def snapshot(obj, *, exclude=()):
    """A JSON-safe dict of a model instance's concrete fields and many-to-many ids, secrets redacted."""
    data = {}
    for field in obj._meta.concrete_fields:
        if field.name in exclude:
            continue
        data[field.name] = getattr(obj, field.attname)
    if obj.pk is not None and not obj._state.adding:
        for field in obj._meta.many_to_many:
            if field.name not in exclude:
                data[field.name] = sorted(str(pk) for pk in getattr(obj, field.name).values_list("pk", flat=True))
    return redact(_jsonable(data))


def diff(before: dict | None, after: dict | None):
    """Only the keys that changed (both sides), so update events read at a glance."""
    if not before or not after:
        return before, after
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def _canonical(fields: dict) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    fields = {
        "chain": event.chain,
        "seq": event.seq,
        "workspace": event.workspace_id,
        "occurred_at": event.occurred_at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
        "actor": [event.actor_type, event.actor_id, event.actor_label],
        "action": event.action,
        "object": [event.object_type, event.object_id, event.object_repr],
        "before": event.before,
        "after": event.after,
        "request_id": event.request_id,
        "ip": event.ip,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(_canonical(fields)).hexdigest()


def chain_key(workspace) -> str:
    return str(workspace.pk) if workspace is not None else "global"


def record(*, workspace, action, obj=None, object_type=None, object_id=None, object_repr=None,
           before=None, after=None, actor=None) -> AuditEvent:
    """Append one event to the workspace's chain, inside the caller's transaction.

    The chain head row is locked until the caller commits, so events of one workspace
    are strictly ordered; other workspaces' chains are not blocked.
    """
    return record_many(workspace=workspace, entries=[dict(
        action=action, obj=obj, object_type=object_type, object_id=object_id, object_repr=object_repr,
        before=before, after=after)], actor=actor)[0]


def record_many(*, workspace, entries, actor=None) -> list:
    """Appends several events to the workspace's chain in one insert, in order; each entry takes
    `record`'s keyword arguments (action, obj, object_type, object_id, object_repr, before, after)."""
    actor = actor or context.current_actor()
    key = chain_key(workspace)
    request_id, ip = context.current_request_id(), context.current_ip()
    with transaction.atomic(savepoint=False):
        head = AuditChain.objects.select_for_update().filter(key=key).first()
        if head is None:
            AuditChain.objects.get_or_create(key=key, defaults={"workspace": workspace})
            head = AuditChain.objects.select_for_update().get(key=key)
        seq, prev = head.last_seq, head.last_hash or GENESIS
        now = timezone.now()
        events = []
        from controlplane import bulk

        for entry in entries:
            obj = entry.get("obj")
            object_type, object_id, object_repr = entry.get("object_type"), entry.get("object_id"), entry.get("object_repr")
            if obj is not None:
                object_type = object_type or obj._meta.label_lower
                object_id = object_id or str(obj.pk)
                object_repr = object_repr or str(obj)
            seq += 1
            event = bulk.new(
                AuditEvent, workspace=workspace, chain=key, seq=seq, occurred_at=now,
                actor_type=actor.type, actor_id=actor.id, actor_label=actor.label[:200],
                action=entry["action"], object_type=object_type or "", object_id=str(object_id or ""),
                object_repr=(object_repr or "")[:300],
                before=_stored(entry.get("before")), after=_stored(entry.get("after")),
                request_id=request_id, ip=ip, prev_hash=prev,
            )
            event.hash = prev = compute_hash(event)
            events.append(event)
        bulk.insert(AuditEvent, events)
        AuditChain.objects.filter(pk=head.pk).update(last_seq=seq, last_hash=prev)
    return events


def _stored(value):
    """Redacted and JSON-safe: a fresh tree of dicts with string keys, lists, strings, numbers, booleans
    and None, which the database gives back as it was given, so the hash covers what is read back."""
    if value is None:
        return None
    return redact(_jsonable(value))


def cut_before(*, workspace, before, batch_size: int = 5000) -> int:
    """Retention: removes the workspace's audit events older than `before`, oldest first, and records
    the cut (last removed seq and hash) so the rest of the chain still verifies. The one deleter."""
    key = chain_key(workspace)
    last = (AuditEvent.objects.filter(chain=key, occurred_at__lt=before).order_by("-seq")
            .values_list("seq", "hash").first())
    head = AuditChain.objects.filter(key=key).first()
    if last is None or head is None or last[0] <= head.cut_seq:
        return 0
    cut_seq, cut_hash = last
    removed = 0
    with transaction.atomic():
        AuditChain.objects.select_for_update().filter(pk=head.pk).first()
        while True:
            ids = list(AuditEvent.objects.filter(chain=key, seq__lte=cut_seq).order_by("seq")
                       .values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            removed += models.QuerySet(AuditEvent).filter(pk__in=ids)._raw_delete(using="default")
        AuditChain.objects.filter(pk=head.pk).update(cut_seq=cut_seq, cut_hash=cut_hash, cut_at=timezone.now())
        record(workspace=workspace, action="audit.retention_cut", object_type="audit",
               after={"removed": removed, "cut_seq": cut_seq, "cut_hash": cut_hash, "before": before})
    return removed


@dataclass
class VerifyResult:
    chain: str
    ok: bool
    checked: int
    broken_seq: int | None = None
    broken_id: str | None = None
    problem: str = ""


def verify(workspace=None, *, chain=None, progress=None) -> VerifyResult:
    """Walk one chain in seq order; name the first event that is edited, missing or out of order."""
    key = chain or chain_key(workspace)
    head = AuditChain.objects.filter(key=key).first()
    # After a retention cut the chain is verified from the first kept event onwards.
    expected_prev = (head.cut_hash if head and head.cut_seq else "") or GENESIS
    expected_seq = (head.cut_seq if head else 0) + 1
    checked = 0
    rows = AuditEvent.objects.filter(chain=key, seq__gte=expected_seq).order_by("seq").iterator(chunk_size=2000)
    for event in rows:
        if event.seq != expected_seq:
            return VerifyResult(key, False, checked, expected_seq, event.id,
                                f"event #{expected_seq} is missing (next present is #{event.seq}, id {event.id})")
        if event.prev_hash != expected_prev:
            return VerifyResult(key, False, checked, event.seq, event.id,
                                f"event #{event.seq} (id {event.id}) does not follow #{event.seq - 1}: "
                                "rows were removed or reordered")
        if compute_hash(event) != event.hash:
            return VerifyResult(key, False, checked, event.seq, event.id,
                                f"event #{event.seq} (id {event.id}) was altered: its content no longer matches its hash")
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
        if progress:
            progress(1)
    last = expected_seq - 1
    if head is not None and head.last_seq != last:
        return VerifyResult(key, False, checked, last + 1, None,
                            f"the chain ends at #{last} but its head records #{head.last_seq}: "
                            "the latest events were removed")
    return VerifyResult(key, True, checked)
