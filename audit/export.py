"""Audit exports: JSONL or CSV, streamed in constant memory, with a digest and a manifest.

An export is bounded by the chain heads seen when it starts, so the rows (append-only)
are the same on every pass: the HTTP export hashes one pass for `X-Audit-Digest` and
streams the next.
"""

import csv
import hashlib
import io
import json
import re

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Max
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audit.models import AuditChain, AuditEvent

CSV_COLUMNS = ["id", "workspace", "seq", "occurred_at", "actor_type", "actor_id", "actor_label", "action",
               "object_type", "object_id", "object_repr", "before", "after", "request_id", "ip", "prev_hash", "hash"]
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def event_dict(event: AuditEvent) -> dict:
    return {
        "id": event.id,
        "workspace": event.workspace_id,
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_repr": event.object_repr,
        "before": event.before,
        "after": event.after,
        "request_id": event.request_id,
        "ip": event.ip,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


_FORMULA_STARTS = frozenset(_FORMULA_PREFIXES)


def _cell(value):
    """escape_cell for the export's own values (str, int or None): the hot loop of a CSV export."""
    if value.__class__ is str:
        return "'" + value if value and value[0] in _FORMULA_STARTS else value
    return "" if value is None else value


def escape_cell(value) -> str:
    """Spreadsheet formula injection guard: a cell starting with = + - @ is prefixed with '."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def bounded_queryset(*, workspace=None, since=None, until=None, action=None, actor=None):
    """Events in range, bounded by the current chain heads, in chain order."""
    qs = AuditEvent.objects.all()
    if workspace is not None:
        qs = qs.filter(workspace=workspace)
        heads = {str(workspace.pk): AuditChain.objects.filter(key=str(workspace.pk)).values_list("last_seq", flat=True).first() or 0}
    else:
        heads = dict(AuditChain.objects.values_list("key", "last_seq"))
    if since:
        qs = qs.filter(occurred_at__gte=since)
    if until:
        qs = qs.filter(occurred_at__lt=until)
    if action:
        qs = qs.filter(action=action)
    if actor:
        qs = _actor_filter(qs, actor)
    from django.db.models import Q

    bound = Q()
    for key, last in heads.items():
        bound |= Q(chain=key, seq__lte=last)
    qs = qs.filter(bound) if heads else qs.none()
    return qs.order_by("chain", "seq"), heads


def _actor_filter(qs, actor):
    from django.db.models import Q

    kind, _, ident = actor.partition(":")
    if ident and kind in ("user", "api_key", "system"):
        return qs.filter(Q(actor_type=kind) & (Q(actor_id=ident) | Q(actor_label=ident)))
    return qs.filter(Q(actor_id=actor) | Q(actor_label=actor))


_SCALARS = ["id", "workspace_id", "seq", "actor_type", "actor_id", "actor_label", "action", "object_type",
            "object_id", "object_repr", "request_id", "ip", "prev_hash", "hash"]


def _iso_text(text: str) -> str:
    """A database timestamp as text (UTC session) in Python's isoformat, without parsing it:
    `2026-11-23 05:10:47.00264+00` → `2026-11-23T05:10:47.002640+00:00`."""
    text = text.replace(" ", "T", 1)
    if text.endswith("+00"):
        text += ":00"
    elif "+" not in text[19:]:
        text += "+00:00"
    if text[19:20] == ".":
        offset = text.index("+", 19)
        text = text[:20] + text[20:offset].ljust(6, "0") + text[offset:]
    return text


def _raw_rows(queryset, chunk_size):
    """Rows with timestamps and JSON columns as the database's text: exporting never re-parses them."""
    from django.db.models import TextField
    from django.db.models.functions import Cast

    annotated = queryset.annotate(
        occurred_text=Cast("occurred_at", TextField()), before_text=Cast("before", TextField()),
        after_text=Cast("after", TextField()),
    )
    return annotated.values_list(*_SCALARS, "occurred_text", "before_text", "after_text").iterator(chunk_size=chunk_size)


def iter_chunks(queryset, fmt: str, chunk_size: int = 5000):
    """Yields encoded byte chunks of the export body, in constant memory."""
    if connections[queryset.db].vendor == "postgresql":
        return _copy_chunks(queryset, fmt)
    return _python_chunks(queryset, fmt, chunk_size)


def _python_chunks(queryset, fmt, chunk_size):
    """The export formatted row by row in Python (databases other than PostgreSQL): the reference
    that `_copy_chunks` reproduces byte for byte."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
    rows = 0
    parts = []
    for row in _raw_rows(queryset, chunk_size):
        (ident, workspace, seq, actor_type, actor_id, actor_label, action, object_type, object_id, object_repr,
         request_id, ip, prev_hash, digest, occurred, before, after) = row
        occurred = _iso_text(occurred)
        if fmt == "csv":
            writer.writerow([_cell(v) for v in (
                ident, workspace, seq, occurred, actor_type, actor_id, actor_label, action, object_type, object_id,
                object_repr, before, after, request_id, ip, prev_hash, digest)])
        else:
            head = encode({"id": ident, "workspace": workspace, "seq": seq, "occurred_at": occurred,
                           "actor_type": actor_type, "actor_id": actor_id, "actor_label": actor_label,
                           "action": action, "object_type": object_type, "object_id": object_id,
                           "object_repr": object_repr, "request_id": request_id, "ip": ip,
                           "prev_hash": prev_hash, "hash": digest})
            parts.append(f'{head[:-1]}, "before": {before or "null"}, "after": {after or "null"}}}\n')
        rows += 1
        if rows % chunk_size == 0:
            yield _drain(fmt, parts, buffer)
    tail = _drain(fmt, parts, buffer)
    if tail:
        yield tail


def _drain(fmt, parts, buffer):
    if fmt == "csv":
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return data
    data = "".join(parts).encode()
    parts.clear()
    return data


# On PostgreSQL the database writes the lines (`COPY … TO STDOUT`); Python only joins, hashes and streams.
# Each column as the text the row-by-row export writes: what the ORM reads (an inet without its /32) and
# timestamps in Python's isoformat (no fraction when it is zero).
_SQL_TEXT = {
    "workspace": "workspace_id", "seq": "seq::text", "ip": "abbrev(ip)", "before": "before::text",
    "after": "after::text",
    "occurred_at": "replace(to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') "
                   "|| '+00:00'",
}
# These start with a digit (or, for ip, a hex digit or colon) and hold no comma, quote or line break.
_SQL_PLAIN = {"seq", "occurred_at", "ip"}
_JSON_ORDER = ["id", "workspace", "seq", "occurred_at", "actor_type", "actor_id", "actor_label", "action",
               "object_type", "object_id", "object_repr", "request_id", "ip", "prev_hash", "hash", "before", "after"]


def _sql_csv_cell(column):
    """A cell as `_cell` leaves it (a leading = + - @ tab or carriage return neutralised; ascii('') is 0),
    for PostgreSQL's CSV writer, which then quotes it as csv.writer does but for two cases handled here: an
    empty string goes out as NULL (it would be quoted), and a carriage return travels as \\x01\\x03 (\\x01
    itself as \\x01\\x02), since a lone one would be quoted where Python's writer leaves it bare."""
    value = _SQL_TEXT.get(column, column)
    if column not in _SQL_PLAIN:
        value = f"CASE WHEN ascii({value}) IN (9, 13, 43, 45, 61, 64) THEN '''' || {value} ELSE {value} END"
        value = f"replace(replace({value}, E'\\x01', E'\\x01\\x02'), E'\\r', E'\\x01\\x03')"
    return f"NULLIF({value}, '')"


def _sql_json_value(column):
    """A value as json.dumps(ensure_ascii=False) writes it: PostgreSQL escapes strings the same way."""
    value = _SQL_TEXT.get(column, column)
    if column not in ("seq", "before", "after"):  # a number and JSON are JSON text already
        value = f"to_json({value})::text"
    return f"coalesce({value}, 'null')"


_SQL_CSV_CELLS = {f"c{n}": _sql_csv_cell(column) for n, column in enumerate(CSV_COLUMNS)}
_SQL_JSON_LINE = "concat('{', " + ", ', ', ".join(
    f"'\"{column}\": ', {_sql_json_value(column)}" for column in _JSON_ORDER) + ", '}')"
# COPY's text format escapes backslashes and control characters as backslash sequences, and nothing else.
_COPY_ESCAPE = re.compile(rb"\\(.)", re.S)
_COPY_UNESCAPED = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _copy_sql(queryset, fmt):
    if fmt == "jsonl":
        sql, params = queryset.annotate(line=RawSQL(_SQL_JSON_LINE, ())).values_list("line").query.sql_with_params()
        return f"COPY ({sql}) TO STDOUT", params
    cells = queryset.annotate(**{name: RawSQL(sql, ()) for name, sql in _SQL_CSV_CELLS.items()})
    sql, params = cells.values_list(*_SQL_CSV_CELLS).query.sql_with_params()
    return f"COPY ({sql}) TO STDOUT (FORMAT csv)", params


def _decode(fmt, data: bytes) -> bytes:
    """Undoes what COPY's format added: backslash escapes (text) or carriage-return stand-ins (CSV)."""
    if fmt == "csv":
        return data.replace(b"\x01\x03", b"\r").replace(b"\x01\x02", b"\x01") if b"\x01" in data else data
    return _COPY_ESCAPE.sub(lambda match: _COPY_UNESCAPED[match.group(1)], data) if b"\\" in data else data


def _copy_chunks(queryset, fmt, chunk_bytes=1 << 20):
    if fmt == "csv":
        yield (",".join(CSV_COLUMNS) + "\n").encode()
    try:
        sql, params = _copy_sql(queryset, fmt)
    except EmptyResultSet:
        return
    parts, size = [], 0
    with connections[queryset.db].cursor() as cursor, cursor.cursor.copy(sql, params) as copy:
        for row in copy:  # one line each
            parts.append(row)
            size += len(row)
            if size >= chunk_bytes:
                yield _decode(fmt, b"".join(parts))
                parts, size = [], 0
    if parts:
        yield _decode(fmt, b"".join(parts))


def digest_and_count(queryset, fmt: str) -> tuple[str, int, int]:
    sha = hashlib.sha256()
    size = 0
    for chunk in iter_chunks(queryset, fmt):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), queryset.count(), size


def chain_heads_at_end(queryset) -> dict:
    """For each chain in the export: the last seq and hash included, so a reviewer can match `verifyaudit`."""
    heads = {}
    for row in queryset.order_by().values("chain").annotate(last=Max("seq")):
        event = AuditEvent.objects.filter(chain=row["chain"], seq=row["last"]).only("hash").first()
        heads[row["chain"]] = {"seq": row["last"], "hash": event.hash if event else None}
    return heads


def manifest(*, queryset, fmt, sha256, rows, filters, generated_by) -> dict:
    return {
        "format": fmt,
        "rows": rows,
        "sha256": sha256,
        "filters": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filters.items() if v},
        "generated_at": timezone.now().isoformat(),
        "generated_by": generated_by,
        "chain_heads": chain_heads_at_end(queryset),
    }


def streamed_response(*, workspace, fmt: str, filters: dict, via: str):
    """The HTTP download of an export (API and admin): digest first, then the streamed body, and the
    export itself recorded in the audit log."""
    from django.db import transaction
    from django.http import StreamingHttpResponse

    from audit import services as audit

    queryset, _ = bounded_queryset(workspace=workspace, **filters)
    sha256, rows, size = digest_and_count(queryset, fmt)
    with transaction.atomic():
        audit.record(workspace=workspace, action="audit.exported", object_type="audit",
                     after={"format": fmt, "rows": rows, "sha256": sha256, "via": via,
                            **{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in filters.items() if v}})
    response = StreamingHttpResponse(
        iter_chunks(queryset, fmt),
        content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/jsonl; charset=utf-8",
    )
    response["X-Audit-Digest"] = f"sha256={sha256}"
    response["X-Audit-Rows"] = str(rows)
    response["Content-Length"] = str(size)
    name = workspace.slug if workspace is not None else "all"
    response["Content-Disposition"] = f'attachment; filename="audit-{name}.{fmt}"'
    return response
