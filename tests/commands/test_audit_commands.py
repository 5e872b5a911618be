import csv
import hashlib
import io
import json

import pytest
from django.core.management.base import CommandError
from django.db import connection

from audit.models import AuditEvent
from suppression import services as suppression
from tests.commands.helpers import run

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(workspace, other_workspace):
    for i in range(5):
        suppression.suppress(workspace=workspace, value=f"person{i}@example.com", reason="manual")
    suppression.suppress(workspace=other_workspace, value="someone@example.com", reason="manual")
    return workspace


class TestExportAudit:
    def test_file_and_manifest_agree(self, history, tmp_path):
        workspace = history
        expected = AuditEvent.objects.filter(workspace=workspace).count()
        output = tmp_path / "audit.jsonl"
        _, err = run("exportaudit", "--workspace", workspace.slug, "--output", str(output))
        body = output.read_bytes()
        manifest = json.loads((tmp_path / "audit.jsonl.manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(body).hexdigest()
        assert manifest["bytes"] == len(body)
        rows = [json.loads(line) for line in body.decode().splitlines()]
        assert manifest["rows"] == len(rows) == expected
        assert {r["workspace"] for r in rows} == {workspace.pk}
        assert [r["seq"] for r in rows] == list(range(1, expected + 1))
        assert manifest["format"] == "jsonl"
        assert manifest["filters"] == {"workspace": workspace.slug}
        assert manifest["range"]["first_event_at"] == rows[0]["occurred_at"]
        assert manifest["chain_heads"] == {workspace.pk: {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]}}
        assert "Exporting" in err
        # The export itself is evidence, recorded after the rows it covers.
        event = AuditEvent.objects.filter(workspace=workspace).order_by("-seq").first()
        assert (event.action, event.actor_label) == ("audit.exported", "command:exportaudit")
        assert (event.after["rows"], event.after["sha256"]) == (expected, manifest["sha256"])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.manifest.json"]

    def test_every_chain_as_csv(self, history, other_workspace, tmp_path):
        output = tmp_path / "all.csv"
        run("exportaudit", "--format", "csv", "--output", str(output))
        body = output.read_bytes()
        manifest = json.loads((tmp_path / "all.csv.manifest.json").read_text())
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert manifest["sha256"] == hashlib.sha256(body).hexdigest()
        assert manifest["rows"] == len(rows) == AuditEvent.objects.count() - 1  # minus the export's own event
        assert {history.pk, other_workspace.pk} <= set(manifest["chain_heads"])
        assert AuditEvent.objects.filter(chain="global", action="audit.exported").exists()

    def test_time_range(self, history, tmp_path):
        output = tmp_path / "future.jsonl"
        run("exportaudit", "--workspace", history.slug, "--since", "2999-01-01", "--output", str(output))
        manifest = json.loads((tmp_path / "future.jsonl.manifest.json").read_text())
        assert output.read_bytes() == b"" and manifest["rows"] == 0
        assert manifest["range"]["since"] == "2999-01-01T00:00:00+00:00"
        run("exportaudit", "--workspace", history.slug, "--until", "2000-01-01T00:00:00Z", "--output", str(output))
        assert output.read_bytes() == b""

    def test_to_stdout_with_manifest_on_stderr(self, history):
        out, err = run("exportaudit", "--workspace", history.slug)
        manifest = json.loads(err)
        assert manifest["sha256"] == hashlib.sha256(out.encode()).hexdigest()
        assert manifest["rows"] == len(out.splitlines())

    def test_refusals(self, history, tmp_path):
        with pytest.raises(CommandError, match="ISO 8601"):
            run("exportaudit", "--since", "last tuesday")
        with pytest.raises(CommandError, match="before"):
            run("exportaudit", "--since", "2025-02-01", "--until", "2025-01-01")
        with pytest.raises(CommandError, match="No such directory"):
            run("exportaudit", "--output", str(tmp_path / "missing" / "x.jsonl"))
        with pytest.raises(CommandError, match="No workspace"):
            run("exportaudit", "--workspace", "nowhere")


class TestVerifyAudit:
    def test_intact_chains(self, history):
        out, err = run("verifyaudit")
        assert "intact" in out and "BROKEN" not in out
        assert "Verifying" in err
        out, _ = run("verifyaudit", "--workspace", history.slug)
        assert f"workspace {history.slug}" in out

    def test_tampered_chain_names_the_first_broken_event(self, history, other_workspace):
        victim = AuditEvent.objects.filter(workspace=history).order_by("seq")[2]
        with connection.cursor() as cursor:
            cursor.execute("UPDATE audit_auditevent SET action = %s WHERE id = %s", ["suppression.deleted", victim.id])
        with pytest.raises(CommandError) as caught:
            run("verifyaudit")
        assert caught.value.returncode == 1
        assert victim.id in str(caught.value) and f"#{victim.seq}" in str(caught.value)
        # Other chains still verify on their own.
        out, _ = run("verifyaudit", "--workspace", other_workspace.slug)
        assert "intact" in out
        with pytest.raises(CommandError) as caught:
            run("verifyaudit", "--workspace", history.slug)
        assert caught.value.returncode == 1 and victim.id in str(caught.value)

    def test_removed_event(self, history):
        victim = AuditEvent.objects.filter(workspace=history).order_by("seq")[1]
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [victim.id])
        with pytest.raises(CommandError, match=f"#{victim.seq} is missing") as caught:
            run("verifyaudit", "--workspace", history.slug)
        assert caught.value.returncode == 1
