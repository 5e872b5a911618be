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
