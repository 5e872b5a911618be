"""The do-not-contact list: `normalise`, `is_suppressed`, `suppress` (the only writer), `bulk_import`."""

import hashlib
import re
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction

from audit import context
from audit import services as audit
from suppression.models import Suppression

_LOCAL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_ADDRESS_RE = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
_DOMAIN_RE = re.compile(rf"^@{_DOMAIN}$")

REASONS = {"unsubscribe", "hard_bounce", "complaint", "manual", "import", "dnc"}


class InvalidValue(ValueError):
    pass


def normalise(value: str) -> str:
    """Trimmed and lower-cased `local@domain` or `@domain`; raises InvalidValue otherwise."""
    if not isinstance(value, str):
        raise InvalidValue("Must be a string.")
    cleaned = value.strip().strip("<>").strip().lower()
    if cleaned.startswith("mailto:"):
        cleaned = cleaned[len("mailto:"):]
    if len(cleaned) > 320 or not (_ADDRESS_RE.match(cleaned) or _DOMAIN_RE.match(cleaned)):
        raise InvalidValue(f"“{value.strip()[:100]}” is not an email address or @domain.")
    return cleaned


def value_hash(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


def candidate_hashes(address: str) -> list[str]:
    """The hashes an address matches: itself and its @domain."""
    normalised = normalise(address)
    if normalised.startswith("@"):
        return [value_hash(normalised)]
    domain = normalised.rsplit("@", 1)[1]
    return [value_hash(normalised), value_hash(f"@{domain}")]


def find(workspace, address: str) -> Suppression | None:
    """The entry that suppresses `address` in `workspace` (an exact address before its domain)."""
    hashes = candidate_hashes(address)
    matches = {s.value_hash: s for s in Suppression.objects.filter(workspace=workspace, value_hash__in=hashes)}
    for h in hashes:
        if h in matches:
            return matches[h]
    return None


_PROBE_SQL = None


def is_suppressed(workspace, address: str) -> bool:
    """One probe of the (workspace, value_hash) index for the address and its @domain.

    Written as SQL: this runs on every intake and every hand-off, and the ORM's query building
    would cost several times the probe itself."""
    global _PROBE_SQL
    if _PROBE_SQL is None:
        _PROBE_SQL = (f"SELECT 1 FROM {Suppression._meta.db_table} "
                      "WHERE workspace_id = %s AND value_hash IN (%s, %s) LIMIT 1")
    hashes = candidate_hashes(address)
    with connection.cursor() as cursor:
        cursor.execute(_PROBE_SQL, [getattr(workspace, "pk", workspace), hashes[0], hashes[-1]])
        return cursor.fetchone() is not None


def suppress(*, workspace, value: str, reason: str = "manual", source: str = "", note: str = "") -> tuple[Suppression, bool]:
    """Adds an entry unless one exists; returns (entry, created). Concurrent adds of one value are safe."""
    if reason not in REASONS:
        raise InvalidValue(f"Unknown reason “{reason}”.")
    normalised = normalise(value)
    digest = value_hash(normalised)
    existing = Suppression.objects.filter(workspace=workspace, value_hash=digest).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            entry = Suppression.objects.create(
                workspace=workspace, value=normalised, value_hash=digest, is_domain=normalised.startswith("@"),
                reason=reason, source=source[:300], note=note, created_by=context.current_actor().label[:200],
            )
            audit.record(workspace=workspace, action="suppression.created", obj=entry,
                         object_repr=audit.pseudonym(normalised),
                         after={"value": audit.pseudonym(normalised), "reason": reason, "source": entry.source})
    except IntegrityError:
        return Suppression.objects.get(workspace=workspace, value_hash=digest), False
    return entry, True


@transaction.atomic
def remove(*, entry: Suppression):
    audit.record(workspace=entry.workspace, action="suppression.deleted", obj=entry,
                 object_repr=audit.pseudonym(entry.value) or str(entry),
                 before={"value": audit.pseudonym(entry.value), "reason": entry.reason, "source": entry.source})
    entry.delete()


@dataclass
class ImportResult:
    created: int = 0
    existing: int = 0
    invalid: list = field(default_factory=list)

    def as_dict(self):
        return {"created": self.created, "existing": self.existing, "invalid": self.invalid}


def bulk_import(*, workspace, values, reason: str = "import", source: str = "import", note: str = "",
                batch_size: int = 5000, progress=None) -> ImportResult:
    """Imports many values in one transaction: the whole file applies or nothing does.

    Invalid values are reported (not imported); duplicates in the file count once.
    """
    if reason not in REASONS:
        raise InvalidValue(f"Unknown reason “{reason}”.")
    result = ImportResult()
    created_by = context.current_actor().label[:200]
    seen = set()
    batch: dict[str, str] = {}

    def flush():
        if not batch:
            return
        if connection.vendor == "postgresql":
            created = _insert_new(workspace, batch, reason=reason, source=source[:300], note=note,
                                  created_by=created_by)
            result.created += created
            result.existing += len(batch) - created
            batch.clear()
            return
        present = set(
            Suppression.objects.filter(workspace=workspace, value_hash__in=list(batch)).values_list("value_hash", flat=True)
        )
        new = [
            Suppression(workspace=workspace, value=v, value_hash=h, is_domain=v.startswith("@"), reason=reason,
                        source=source[:300], note=note, created_by=created_by)
            for h, v in batch.items() if h not in present
        ]
        Suppression.objects.bulk_create(new, ignore_conflicts=True, batch_size=batch_size)
        result.created += len(new)
        result.existing += len(present)
        batch.clear()

    with transaction.atomic():
        for raw in values:
            if progress:
                progress(1)
            if raw is None or not str(raw).strip():
                continue
            try:
                normalised = normalise(str(raw))
            except InvalidValue:
                result.invalid.append(str(raw).strip()[:320])
                continue
            digest = value_hash(normalised)
            if digest in seen:
                continue
            seen.add(digest)
            batch[digest] = normalised
            if len(batch) >= batch_size:
                flush()
        flush()
        audit.record(workspace=workspace, action="suppression.imported", object_type="suppression",
                     object_repr=source[:300],
                     after={"reason": reason, "source": source, **result.as_dict(), "invalid": len(result.invalid)})
    return result


def _insert_new(workspace, batch: dict, *, reason, source, note, created_by) -> int:
    """Inserts a batch in one statement (arrays unnested on the server); existing values are skipped
    by the unique index. Returns how many were new."""
    from controlplane.ids import new_id

    hashes = list(batch)
    values = [batch[h] for h in hashes]
    ids = [new_id("sup") for _ in hashes]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {Suppression._meta.db_table}
                    (id, workspace_id, value, value_hash, is_domain, reason, source, note, created_by, created_at)
                SELECT i, %s, v, h, left(v, 1) = '@', %s, %s, %s, %s, now()
                FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(i, v, h)
                ON CONFLICT (workspace_id, value_hash) DO NOTHING""",
            [workspace.pk, reason, source, note, created_by, ids, values, hashes],
        )
        return cursor.rowcount


def read_values(lines):
    """Values from a CSV (a column named email/address/value, else the first column) or one-per-line file."""
    import csv

    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        return
    first = first.lstrip("\ufeff")
    if "," in first or ";" in first:
        dialect = csv.excel if "," in first else csv.excel
        delimiter = "," if "," in first else ";"
        header = next(csv.reader([first], delimiter=delimiter))
        lowered = [h.strip().lower() for h in header]
        column = next((lowered.index(n) for n in ("email", "address", "value", "e-mail") if n in lowered), None)
        rows = csv.reader(lines, dialect=dialect, delimiter=delimiter)
        if column is None:
            column = 0
            yield header[0]
        for row in rows:
            if len(row) > column:
                yield row[column]
            elif row:
                yield ""
    else:
        yield first.strip()
        for line in lines:
            yield line.strip()
