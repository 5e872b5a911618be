"""The do-not-contact list.

Selectors: `normalise`, `is_suppressed` and `suppressed_many` (the hot path), `matches`/`find` and `describe`
(why an address is suppressed). Writers: `suppress` (the only one that adds single entries), `remove`,
`bulk_import` and `import_synced`.

An entry is an address (`jane@acme.com`), a domain (`@acme.com`: exactly that domain) or a subdomain
pattern (`@*.acme.com`: every subdomain of acme.com at any depth, not acme.com itself). Entries without a
workspace are agency-wide: they apply in every workspace and are reported before the workspace's own.
"""

import hashlib
import itertools
import re
import secrets
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from audit import context
from audit import services as audit
from suppression.models import Suppression, SuppressionRemoval

_LOCAL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_ADDRESS_RE = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
_DOMAIN_RE = re.compile(rf"^@{_DOMAIN}$")
_SUBDOMAIN_RE = re.compile(rf"^@\*\.{_DOMAIN}$")

REASONS = {"unsubscribe", "hard_bounce", "complaint", "manual", "import", "dnc"}
TABLE = Suppression._meta.db_table
SCOPE_SQL = "(workspace_id = %s OR workspace_id IS NULL)"


class InvalidValue(ValueError):
    pass


def normalise(value: str) -> str:
    """Trimmed and lower-cased `local@domain`, `@domain` or `@*.domain`; raises InvalidValue otherwise."""
    if not isinstance(value, str):
        raise InvalidValue("Must be a string.")
    cleaned = value.strip().strip("<>").strip().lower()
    if cleaned.startswith("mailto:"):
        cleaned = cleaned[len("mailto:"):]
    if len(cleaned) <= 320:
        if _ADDRESS_RE.match(cleaned):
            if not cleaned.startswith("*@"):
                return cleaned
        elif _DOMAIN_RE.match(cleaned) or _SUBDOMAIN_RE.match(cleaned):
            return cleaned
    if "*" in cleaned:
        raise InvalidValue(f"“{value.strip()[:100]}” is not a valid pattern: @*.acme.com covers every subdomain "
                           "of acme.com (a domain of at least two labels); @acme.com covers the domain itself.")
    raise InvalidValue(f"“{value.strip()[:100]}” is not an email address or @domain.")


def kind_of(normalised: str) -> str:
    if normalised.startswith("@*."):
        return "subdomain"
    return "domain" if normalised.startswith("@") else "address"


def value_hash(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


def candidate_values(value: str) -> list[str]:
    """The entries that would cover `value`, most specific first: the value itself, its @domain, then
    `@*.parent` for each parent domain of at least two labels (nearest first)."""
    normalised = normalise(value)
    if normalised.startswith("@"):
        own, domain = [normalised], normalised.removeprefix("@*.").removeprefix("@")
    else:
        domain = normalised.rsplit("@", 1)[1]
        own = [normalised, f"@{domain}"]
    labels = domain.split(".")
    return own + ["@*." + ".".join(labels[i:]) for i in range(1, len(labels) - 1)]


def candidate_hashes(value: str) -> list[str]:
    return [value_hash(v) for v in candidate_values(value)]


def _workspace_id(workspace):
    return getattr(workspace, "pk", workspace)


_PROBE_SQL = {}


def _probe_sql(count: int) -> str:
    sql = _PROBE_SQL.get(count)
    if sql is None:
        sql = _PROBE_SQL[count] = (f"SELECT 1 FROM {TABLE} WHERE value_hash IN ({', '.join(['%s'] * count)}) "
                                   f"AND {SCOPE_SQL} LIMIT 1")
    return sql


def is_suppressed(workspace, address: str) -> bool:
    """One probe of the unique indexes for the address, its @domain and its parents' @*. patterns, in the
    workspace's list and the agency-wide one.

    Written as SQL: this runs on every intake and every hand-off, and the ORM's query building
    would cost several times the probe itself."""
    hashes = candidate_hashes(address)
    with connection.cursor() as cursor:
        cursor.execute(_probe_sql(len(hashes)), [*hashes, _workspace_id(workspace)])
        return cursor.fetchone() is not None


def suppressed_many(workspace, addresses) -> set:
    """The addresses (as given) that `is_suppressed` would refuse, in one statement for the whole batch.
    Values that are not addresses are left out: intake refuses them on its own."""
    wanted = {}
    for address in addresses:
        try:
            wanted[address] = candidate_hashes(address)
        except InvalidValue:
            continue
    hashes = sorted({h for candidates in wanted.values() for h in candidates})
    if not hashes:
        return set()
    if connection.vendor == "postgresql":  # one array parameter, however large the batch
        sql, params = "value_hash = ANY(%s)", [hashes]
    else:
        sql, params = f"value_hash IN ({', '.join(['%s'] * len(hashes))})", hashes
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value_hash FROM {TABLE} WHERE {sql} AND {SCOPE_SQL}",
                       [*params, _workspace_id(workspace)])
        found = {row[0] for row in cursor.fetchall()}
    return {address for address, candidates in wanted.items() if not found.isdisjoint(candidates)}


def matches(workspace, address: str) -> list[Suppression]:
    """Every entry that suppresses `address` in `workspace`: agency-wide entries first, then the
    workspace's; within each, the address before its domain before the nearest subdomain pattern."""
    hashes = candidate_hashes(address)
    rank = {h: i for i, h in enumerate(hashes)}
    found = Suppression.objects.filter(Q(workspace=workspace) | Q(workspace__isnull=True), value_hash__in=hashes)
    return sorted(found, key=lambda s: (s.workspace_id is not None, rank[s.value_hash]))


def find(workspace, address: str) -> Suppression | None:
    """The entry that decides: the first of `matches`."""
    found = matches(workspace, address)
    return found[0] if found else None


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def describe(entry: Suppression) -> dict:
    """Why an entry suppresses: what it is, where it applies, who or what added it, and its evidence."""
    return {
        "id": entry.pk, "value": entry.value, "scope": entry.scope, "kind": entry.kind, "reason": entry.reason,
        "source": entry.source, "source_event": entry.source_event or None, "note": entry.note,
        "created_by": entry.created_by, "created_at": _iso(entry.created_at), "evidence": entry.evidence or None,
    }


def _audit_after(normalised, entry):
    return {"value": audit.pseudonym(normalised), "scope": entry.scope, "kind": entry.kind, "reason": entry.reason,
            "source": entry.source}


def suppress(*, workspace, value: str, reason: str = "manual", source: str = "", note: str = "",
             evidence: dict | None = None, source_event: str = "") -> tuple[Suppression, bool]:
    """Adds an entry unless one exists; returns (entry, created). `workspace=None` adds an agency-wide entry
    (the caller checks that its user may). Concurrent adds of one value are safe."""
    if reason not in REASONS:
        raise InvalidValue(f"Unknown reason “{reason}”.")
    normalised = normalise(value)
    digest = value_hash(normalised)
    existing = Suppression.objects.filter(workspace=workspace, value_hash=digest).first()
    if existing:
        return existing, False
    kind = kind_of(normalised)
    try:
        with transaction.atomic():
            entry = Suppression.objects.create(
                workspace=workspace, value=normalised, value_hash=digest, is_domain=kind != "address", kind=kind,
                reason=reason, source=source[:300], note=note, evidence=evidence or {},
                source_event=source_event[:40], created_by=context.current_actor().label[:200],
            )
            audit.record(workspace=workspace, action="suppression.created", obj=entry,
                         object_repr=audit.pseudonym(normalised), after=_audit_after(normalised, entry))
    except IntegrityError:
        return Suppression.objects.get(workspace=workspace, value_hash=digest), False
    return entry, True


def link_source_event(entry: Suppression, event_id: str):
    """Records the canonical event behind an entry that was added just before its event was emitted."""
    Suppression.objects.filter(pk=entry.pk, source_event="").update(source_event=event_id)
    entry.source_event = entry.source_event or event_id


@transaction.atomic
def remove(*, entry: Suppression):
    """Deletes an entry; a workspace's removal is remembered (as a hash) so provider sync can push it."""
    audit.record(workspace=entry.workspace, action="suppression.deleted", obj=entry,
                 object_repr=audit.pseudonym(entry.value) or str(entry),
                 before={"value": audit.pseudonym(entry.value), "scope": entry.scope, "kind": entry.kind,
                         "reason": entry.reason, "source": entry.source})
    if entry.workspace_id:
        SuppressionRemoval.objects.create(workspace_id=entry.workspace_id, value_hash=entry.value_hash,
                                          reason=entry.reason)
    entry.delete()


def _in_chunks(hashes, size=10000):
    hashes = sorted(hashes)
    for start in range(0, len(hashes), size):
        yield hashes[start:start + size]


def latest_removals(workspace, hashes) -> dict:
    """{value_hash: when it was last removed from the workspace's list} for the given hashes."""
    latest = {}
    for chunk in _in_chunks(hashes):
        rows = SuppressionRemoval.objects.filter(workspace=workspace, value_hash__in=chunk)
        for digest, removed_at in rows.values_list("value_hash", "removed_at"):
            latest[digest] = max(removed_at, latest.get(digest, removed_at))
    return latest


def present_hashes(workspace, hashes) -> set:
    """Which of the hashes are entries of the workspace's own list."""
    present = set()
    for chunk in _in_chunks(hashes):
        present.update(Suppression.objects.filter(workspace=workspace, value_hash__in=chunk)
                       .values_list("value_hash", flat=True))
    return present


@dataclass
class ImportResult:
    created: int = 0
    existing: int = 0
    invalid: list = field(default_factory=list)

    def as_dict(self):
        return {"created": self.created, "existing": self.existing, "invalid": self.invalid}


CHUNK = 10000  # values per COPY write and per progress report


def _cleaned(values, result, progress):
    """Chunks of normalised values; invalid ones are collected in `result`, blank ones skipped. Most
    values are plain addresses: they take a fast path that gives what `normalise` would."""
    address = _ADDRESS_RE.match
    chunk = []
    seen = 0
    for raw in values:
        seen += 1
        if type(raw) is str:
            value = raw.strip().lower()
            if address(value) and len(value) <= 320 and not value.startswith("*@"):
                chunk.append(value)
                if len(chunk) == CHUNK:
                    yield chunk
                    chunk = []
                    if progress:
                        progress(seen)
                        seen = 0
                continue
        if raw is None:
            continue
        text = raw if isinstance(raw, str) else str(raw)
        try:
            chunk.append(normalise(text))
        except InvalidValue:
            if text.strip():
                result.invalid.append(text.strip()[:320])
    if chunk:
        yield chunk
    if progress and seen:
        progress(seen)


def bulk_import(*, workspace, values, reason: str = "import", source: str = "import", note: str = "",
                progress=None) -> ImportResult:
    """Imports many values in one transaction: the whole file applies or nothing does. `workspace=None`
    imports into the agency-wide list. Invalid values are reported (not imported); duplicates in the file
    count once. Audited once, with the counts."""
    if reason not in REASONS:
        raise InvalidValue(f"Unknown reason “{reason}”.")
    result = ImportResult()
    with transaction.atomic():
        created, distinct = _insert(workspace, _cleaned(values, result, progress), reason=reason,
                                    source=source[:300], note=note)
        result.created, result.existing = created, distinct - created
        audit.record(workspace=workspace, action="suppression.imported", object_type="suppression",
                     object_repr=source[:300],
                     after={"reason": reason, "source": source, "scope": "workspace" if workspace else "global",
                            **result.as_dict(), "invalid": len(result.invalid)})
    return result


def import_synced(*, workspace, entries, source: str, note: str = "", audit_after=None) -> ImportResult:
    """Adds a provider's suppressions to the workspace's list in one transaction: `entries` are
    (address, reason, created_at); an address already listed keeps its entry. Audited once when it adds any."""
    result = ImportResult()
    rows = []
    for address, reason, created_at in entries:
        try:
            rows.append((normalise(address), reason, created_at))
        except InvalidValue:
            result.invalid.append(str(address)[:320])
    with transaction.atomic():
        created, distinct = _insert(workspace, [rows] if rows else [], reason="import", source=source[:300],
                                    note=note)
        result.created, result.existing = created, distinct - created
        if created:
            audit.record(workspace=workspace, action="suppression.synced", object_type="suppression",
                         object_repr=source[:300],
                         after={**(audit_after or {}), **result.as_dict(), "invalid": len(result.invalid)})
    return result


def _insert(workspace, chunks, *, reason, source, note) -> tuple[int, int]:
    """Inserts chunks of normalised values (or of (value, reason, created_at) rows) that are not yet on the
    list; returns (created, distinct values seen). Call inside a transaction."""
    created_by = context.current_actor().label[:200]
    if connection.vendor == "postgresql":
        return _copy_insert(workspace, chunks, reason=reason, source=source, note=note, created_by=created_by)
    return _orm_insert(workspace, chunks, reason=reason, source=source, note=note, created_by=created_by)


STAGED = "suppression_staged"


def _copy_insert(workspace, chunks, *, reason, source, note, created_by) -> tuple[int, int]:
    """PostgreSQL: the values are COPYed into a temporary table, then one statement hashes them, drops
    duplicates and values already listed, and inserts the rest in hash order (each index page is visited
    once) with ids made on the server. Normalised values hold no tab, newline or backslash."""
    from controlplane.ids import new_id

    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        return 0, 0
    detailed = not isinstance(first[0], str)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {STAGED} (value text, reason text, created_at timestamptz)")
        with cursor.copy(f"COPY {STAGED} ({'value, reason, created_at' if detailed else 'value'}) FROM STDIN") as copy:
            for chunk in itertools.chain([first], chunks):
                if detailed:
                    copy.write("".join(f"{v}\t{r}\t{at.isoformat()}\n" for v, r, at in chunk))
                else:
                    copy.write("\n".join(chunk) + "\n")
        cursor.execute(f"ANALYZE {STAGED}")
        # Sorts in memory; no JIT compilation, which the many index probes' cost estimate would trigger.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SET LOCAL jit = off")
        # Ids: the time part of a fresh id, a random part for this import, and the row's number.
        params = [new_id("sup")[:14] + secrets.token_hex(4), reason, source, note, created_by,
                  _workspace_id(workspace)]
        try:
            with transaction.atomic():
                cursor.execute(_insert_sql(workspace, on_conflict=False), params)
        except IntegrityError:  # a value added concurrently, after the statement's snapshot: skip it instead
            cursor.execute(_insert_sql(workspace, on_conflict=True), params)
        distinct, created = cursor.fetchone()
        cursor.execute(f"DROP TABLE {STAGED}")
        cursor.execute("RESET work_mem")
        cursor.execute("RESET jit")
    return created, distinct


def _insert_sql(workspace, *, on_conflict):
    scope = "t.workspace_id = staged.workspace_id" if workspace is not None else "t.workspace_id IS NULL"
    conflict = ""
    if on_conflict:
        target = "(workspace_id, value_hash)" if workspace is not None else "(value_hash) WHERE workspace_id IS NULL"
        conflict = f"ON CONFLICT {target} DO NOTHING"
    return f"""
        WITH distinct_values AS (
            SELECT DISTINCT ON (value_hash COLLATE "C") value, value_hash, reason, created_at
            FROM (SELECT value, encode(sha256(convert_to(value, 'UTF8')), 'hex') AS value_hash, reason, created_at
                  FROM {STAGED}) AS hashed
            ORDER BY value_hash COLLATE "C", created_at  -- hex digits: byte order, the fastest sort
        ), inserted AS (
            INSERT INTO {TABLE} (id, workspace_id, value, value_hash, is_domain, kind, reason, source, source_event,
                                 evidence, note, created_by, created_at)
            SELECT %s || lpad(to_hex(row_number() OVER (ORDER BY value_hash)), 8, '0'), workspace_id, value,
                   value_hash, left(value, 1) = '@',
                   CASE WHEN left(value, 3) = '@*.' THEN 'subdomain' WHEN left(value, 1) = '@' THEN 'domain'
                        ELSE 'address' END,
                   coalesce(reason, %s), %s, '', '{{}}'::jsonb, %s, %s, coalesce(created_at, now())
            FROM (SELECT d.*, %s AS workspace_id FROM distinct_values AS d) AS staged
            -- One index probe per value (a subplan, never a join that would read the whole list).
            WHERE (SELECT true FROM {TABLE} AS t WHERE {scope} AND t.value_hash = staged.value_hash LIMIT 1) IS NULL
            ORDER BY value_hash
            {conflict}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM distinct_values), (SELECT count(*) FROM inserted)"""


def _orm_insert(workspace, chunks, *, reason, source, note, created_by) -> tuple[int, int]:
    """Other databases (the SQLite of `make up`): chunk by chunk through the ORM."""
    created = 0
    seen = set()
    for chunk in chunks:
        batch = {}
        for row in chunk:
            value, row_reason, created_at = (row, None, None) if isinstance(row, str) else row
            digest = value_hash(value)
            if digest not in seen:
                seen.add(digest)
                batch[digest] = (value, row_reason, created_at)
        present = set(Suppression.objects.filter(workspace=workspace, value_hash__in=list(batch))
                      .values_list("value_hash", flat=True))
        new = [(digest, row) for digest, row in batch.items() if digest not in present]
        Suppression.objects.bulk_create([
            Suppression(workspace=workspace, value=value, value_hash=digest, is_domain=kind_of(value) != "address",
                        kind=kind_of(value), reason=row_reason or reason, source=source, note=note,
                        created_by=created_by)
            for digest, (value, row_reason, _) in new
        ], batch_size=500)
        for digest, (_, _, created_at) in new:
            if created_at is not None:  # auto_now_add overrides what bulk_create is given
                Suppression.objects.filter(workspace=workspace, value_hash=digest).update(created_at=created_at)
        created += len(new)
    return created, len(seen)


def read_values(lines):
    """Values from a CSV (a column named email/address/value, else the first column) or one-per-line file."""
    import csv

    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        return
    first = first.lstrip("\ufeff")
    if "," in first or ";" in first:
        delimiter = "," if "," in first else ";"
        header = next(csv.reader([first], delimiter=delimiter))
        lowered = [h.strip().lower() for h in header]
        column = next((lowered.index(n) for n in ("email", "address", "value", "e-mail") if n in lowered), None)
        rows = csv.reader(lines, dialect=csv.excel, delimiter=delimiter)
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
