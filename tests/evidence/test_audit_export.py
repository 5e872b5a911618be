"""100,000 audit events exported and proven complete and unaltered with `verifyaudit --manifest`."""

import datetime as dt
import hashlib
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit import services as audit
from audit.models import AuditChain, AuditEvent
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db


def bulk_chain(workspace, count):
    """Appends `count` well-formed events to the workspace's chain (what `record` writes, in bulk)."""
    head = AuditChain.objects.get(key=str(workspace.pk))
    prev, seq = head.last_hash, head.last_seq
    start = timezone.now() - dt.timedelta(days=1)
    rows = []
    for n in range(count):
        seq += 1
        event = AuditEvent(workspace=workspace, chain=str(workspace.pk), seq=seq,
                           occurred_at=start + dt.timedelta(milliseconds=n), actor_type="system",
                           actor_label="bulk", action="mailbox.updated" if n % 2 else "=cmd|' /C calc'!A0",
                           object_type="mailbox", object_id=f"mbx_{n}", object_repr=f"m{n}@acme.com",
                           before={"daily_cap": n}, after={"daily_cap": n + 1}, prev_hash=prev)
        event.hash = audit.compute_hash(event)
        prev = event.hash
        rows.append(event)
    AuditEvent.objects.bulk_create(rows, batch_size=5000)
    AuditChain.objects.filter(pk=head.pk).update(last_seq=seq, last_hash=prev)


def test_hundred_thousand_events_export_and_verify(workspace, tmp_path):
    bulk_chain(workspace, 100_000)
    for fmt in ("jsonl", "csv"):
        output = tmp_path / f"audit.{fmt}"
        call_command("exportaudit", "--workspace", workspace.slug, "--format", fmt, "--output", str(output),
                     stderr=open(tmp_path / "err", "w"))
        manifest = json.loads((tmp_path / f"audit.{fmt}.manifest.json").read_text())
        body = output.read_bytes()
        assert manifest["sha256"] == hashlib.sha256(body).hexdigest()
        assert manifest["rows"] >= 100_000
        if fmt == "csv":
            assert b"\n'=cmd|" in body or b",'=cmd|" in body  # formula cells are neutralised
        else:
            assert len(body.splitlines()) == manifest["rows"]
    call_command("verifyaudit", "--workspace", workspace.slug, "--manifest",
                 str(tmp_path / "audit.csv.manifest.json"), stdout=open(tmp_path / "out", "w"))

    # One edited byte in a stored event breaks the chain and names it.
    target = AuditEvent.objects.get(chain=str(workspace.pk), seq=50_000)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET object_repr = %s WHERE id = %s",
                       [target.object_repr[:-1] + "X", target.id])
    with pytest.raises(CommandError) as failure:
        call_command("verifyaudit", "--workspace", workspace.slug, stdout=open(tmp_path / "out2", "w"))
    assert target.id in str(failure.value) and "#50000" in str(failure.value)


def test_altered_export_file_fails_its_manifest(workspace, tmp_path):
    bulk_chain(workspace, 50)
    output = tmp_path / "audit.jsonl"
    call_command("exportaudit", "--workspace", workspace.slug, "--output", str(output),
                 stderr=open(tmp_path / "err", "w"))
    output.write_bytes(output.read_bytes().replace(b"m7@acme.com", b"m8@acme.com", 1))
    with pytest.raises(CommandError, match="altered"):
        call_command("verifyaudit", "--manifest", str(tmp_path / "audit.jsonl.manifest.json"),
                     stdout=open(tmp_path / "out", "w"))


def test_export_rejects_bad_ranges_filters_and_formats(make_api, workspace):
    reviewer = make_api(workspace, "reviewer")
    assert_error(reviewer.get("/api/v1/audit/export", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
                 400, "validation_error")
    assert_error(reviewer.get("/api/v1/audit/export", {"format": "xlsx"}), 400, "validation_error")
    assert_error(reviewer.get("/api/v1/audit/export", {"colour": "red"}), 400, "validation_error")
    assert_error(reviewer.get("/api/v1/audit/export", {"since": "yesterday-ish"}), 400, "validation_error")


def test_empty_workspace_verifies(other_workspace, tmp_path):
    call_command("verifyaudit", "--workspace", other_workspace.slug, stdout=open(tmp_path / "out", "w"))


AWKWARD_TEXTS = [
    "plain", "comma, inside", 'a "quoted" word', "two\nlines", "carriage\rreturn", "\ttab first", "\rreturn first",
    "=SUM(A1:A9)", "+33 1 23 45", "-1", "@mention", "ünïcødé – “curly” ✉", "back\\slash \\n not a newline",
    "controls \x01\x02\x08\x0b\x0c\x1b\x1f\x7f", "line separator \u2028 and \u2029", "", 'mixed ,"\n\r\t\\ end',
    "\x01\x03 looks like a stand-in \x01\x02\r", "\r",
]
AWKWARD_JSON = [None, {"daily_cap": -5}, -5, "=text", [1, 2.5, True, None, "two\nlines"], {"ü": {"nested": "\"q\""}},
                {"a": "\\", "b": "\t"}, 0]


def awkward_chain(workspace):
    """Events whose every column holds what CSV and JSON writers trip over, in two chains (one without a workspace)."""
    start = dt.datetime(2026, 3, 29, 0, 59, 59, tzinfo=dt.timezone.utc)
    micro = [0, 1, 500_000, 999_999, 2640]
    ips = [None, "127.0.0.1", "::1", "2001:db8::7", "203.0.113.9"]
    for owner in (workspace, None):
        key = audit.chain_key(owner)
        head, _ = AuditChain.objects.get_or_create(key=key, defaults={"workspace": owner})
        prev, seq = head.last_hash or audit.GENESIS, head.last_seq
        for n, text in enumerate(AWKWARD_TEXTS):
            seq += 1
            event = AuditEvent(
                workspace=owner, chain=key, seq=seq,
                occurred_at=start + dt.timedelta(seconds=n, microseconds=micro[n % 5]),
                actor_type="user", actor_id=text[:150], actor_label=text, action=text or "noted", object_type=text,
                object_id=text, object_repr=text, before=AWKWARD_JSON[n % len(AWKWARD_JSON)],
                after=AWKWARD_JSON[(n + 3) % len(AWKWARD_JSON)], request_id=text[:64], ip=ips[n % 5], prev_hash=prev)
            event.hash = audit.compute_hash(event)
            prev = event.hash
            event.save(force_insert=True)
        AuditChain.objects.filter(pk=head.pk).update(last_seq=seq, last_hash=prev)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_database_formatted_export_is_byte_for_byte_the_row_by_row_one(workspace, fmt):
    """PostgreSQL writes the lines (COPY) where other databases format them in Python: the same bytes,
    whatever the values hold, so digests and manifests do not depend on the database."""
    from audit import export

    awkward_chain(workspace)
    for filters in ({"workspace": workspace}, {}, {"workspace": workspace, "action": "-1"}):
        queryset, _ = export.bounded_queryset(**filters)
        reference = b"".join(export._python_chunks(queryset, fmt, 3))
        assert b"".join(export._copy_chunks(queryset, fmt)) == reference
        assert b"".join(export._copy_chunks(queryset, fmt, chunk_bytes=64)) == reference  # many small chunks
    queryset, _ = export.bounded_queryset()
    body = b"".join(export.iter_chunks(queryset, fmt)).decode()
    if fmt == "csv":
        # csv.writer leaves a lone carriage return unquoted, so the file is checked as text, not re-read.
        for cell in ('"comma, inside"', '"two\nlines"', '"a ""quoted"" word"', ",'=SUM(A1:A9),", ",'@mention,",
                     ",'-1,", ",::1,", ",2001:db8::7,", ',"{""daily_cap"": -5}",', ",'-5,"):
            assert cell in body, cell
        rows = [line for line in body.split("\n") if line.startswith("aud_")]
    else:
        rows = [json.loads(line) for line in body.split("\n")[:-1]]  # not splitlines(): U+2028 stays raw
        assert [row["object_repr"] for row in rows if row["workspace"] is None] == AWKWARD_TEXTS
        stored = {event.id: event for event in AuditEvent.objects.all()}
        for row in rows:
            event = stored[row["id"]]
            assert (row["before"], row["after"], row["seq"]) == (event.before, event.after, event.seq)
            assert row["occurred_at"] == event.occurred_at.isoformat()
    assert len(rows) == AuditEvent.objects.count()


def test_an_empty_export_is_a_header_or_nothing(other_workspace):
    from audit import export

    queryset, _ = export.bounded_queryset(workspace=other_workspace, action="nothing.like.this")
    assert b"".join(export.iter_chunks(queryset, "csv")) == (",".join(export.CSV_COLUMNS) + "\n").encode()
    assert b"".join(export.iter_chunks(queryset, "jsonl")) == b""
