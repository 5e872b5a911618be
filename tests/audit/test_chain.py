"""The audit log is append-only and hash-chained; `verify` names the first broken event."""

import csv
import hashlib
import io
import json

import pytest
from django.db import connection

from audit import services as audit
from audit.models import AppendOnlyError, AuditEvent
from tests.api.helpers import create_identities

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(workspace):
    for n in range(5):
        audit.record(workspace=workspace, action="test.event", object_type="thing", object_id=str(n),
                     after={"n": n, "password": "never-in-the-log"})
    return list(AuditEvent.objects.filter(workspace=workspace).order_by("seq"))


def _sql(statement, params):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_intact_chain_verifies_and_secrets_are_redacted(workspace, chain):
    result = audit.verify(workspace)
    assert result.ok and result.checked == len(chain)
    assert all(e.after.get("password") in (None, "[redacted]") for e in chain)
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    assert all(e.prev_hash == p.hash for p, e in zip(chain, chain[1:]))


def test_what_is_hashed_is_what_the_database_gives_back(workspace):
    """Values of any Python shape are stored as JSON: what `record` returns (and hashed) equals what is
    read back, so the chain verifies."""
    import datetime as dt
    import decimal

    from django.db import models

    class Kind(models.TextChoices):
        COLD = "cold"

    value = {"when": dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc), "day": dt.date(2026, 11, 23),
             "amount": decimal.Decimal("1.50"), "ids": ("a", "b"), "tags": {"x"}, 7: "int key", "kind": Kind.COLD,
             "ratio": 0.25, "big": 2**53 + 1, "none": None, "yes": True, "text": "Zoë ✉ \"quoted\"",
             "nested": [{"api_key": "sk-secret", "level": [1, [2, {"token": "t"}]]}]}
    written = audit.record(workspace=workspace, action="test.shapes", object_type="thing", object_id="1",
                           before={"n": 1}, after=value)
    read = AuditEvent.objects.get(pk=written.pk)
    assert read.after == written.after and read.before == written.before == {"n": 1}
    assert read.after["when"] == "2026-11-23T09:30:00+00:00" and read.after["amount"] == "1.50"
    assert read.after["ids"] == ["a", "b"] and read.after["7"] == "int key" and read.after["kind"] == "cold"
    assert read.after["nested"][0]["api_key"] == "[redacted]" and read.after["nested"][0]["level"][1][1]["token"] == "[redacted]"
    assert value["nested"][0]["api_key"] == "sk-secret"  # the caller's value is left as it was
    assert audit.compute_hash(read) == read.hash
    assert audit.verify(workspace).ok


def test_orm_refuses_updates_and_deletes(chain):
    event = chain[0]
    event.action = "edited"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()


def test_edited_row_is_named(workspace, chain):
    target = chain[3]
    _sql("UPDATE audit_auditevent SET after = %s WHERE id = %s", [json.dumps({"n": 999}), target.id])
    result = audit.verify(workspace)
    assert not result.ok
    assert result.broken_id == target.id and result.broken_seq == target.seq
    assert "altered" in result.problem


def test_deleted_row_is_named(workspace, chain):
    _sql("DELETE FROM audit_auditevent WHERE id = %s", [chain[2].id])
    result = audit.verify(workspace)
    assert not result.ok
    assert result.broken_seq == chain[2].seq
    assert "missing" in result.problem


def test_deleted_tail_is_noticed(workspace, chain):
    _sql("DELETE FROM audit_auditevent WHERE id = %s", [chain[-1].id])
    result = audit.verify(workspace)
    assert not result.ok and "removed" in result.problem


def test_reordered_rows_are_named(workspace, chain):
    a, b = chain[1], chain[2]
    _sql("UPDATE audit_auditevent SET seq = -1 WHERE id = %s", [a.id])
    _sql("UPDATE audit_auditevent SET seq = %s WHERE id = %s", [a.seq, b.id])
    _sql("UPDATE audit_auditevent SET seq = %s WHERE id = %s", [b.seq, a.id])
    result = audit.verify(workspace)
    assert not result.ok
    assert result.broken_seq == a.seq and result.broken_id == b.id


def test_chains_are_per_workspace(workspace, other_workspace, chain):
    audit.record(workspace=other_workspace, action="test.event")
    _sql("UPDATE audit_auditevent SET action = 'x' WHERE id = %s", [chain[0].id])
    assert not audit.verify(workspace).ok
    assert audit.verify(other_workspace).ok


def test_api_writes_are_audited_with_the_key_and_request_id(api, workspace):
    response = api.post("/api/v1/domains", {"name": "acme.com"}, format="json", HTTP_X_REQUEST_ID="req-123")
    event = AuditEvent.objects.get(workspace=workspace, action="domain.created")
    assert event.actor_type == "api_key" and "admin key" in event.actor_label
    assert event.request_id == "req-123" == response["X-Request-Id"]
    assert event.object_id == response.json()["id"]
    assert event.after["name"] == "acme.com"


def test_audit_api_filters_and_roles(api, make_api, workspace):
    create_identities(api)
    rows = api.get("/api/v1/audit", {"action": "mailbox.created"}).json()["results"]
    assert [r["action"] for r in rows] == ["mailbox.created"]
    assert rows[0]["actor"]["type"] == "api_key"
    assert api.get("/api/v1/audit", {"since": "2999-01-01T00:00:00Z"}).json()["results"] == []
    assert make_api(workspace, "sequencer").get("/api/v1/audit").status_code == 403
    assert make_api(workspace, "reviewer").get("/api/v1/audit").status_code == 200


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_digest_matches_body(api, make_api, workspace, fmt):
    create_identities(api)
    audit.record(workspace=workspace, action="note", object_repr="=HYPERLINK(\"http://evil\")")
    reviewer = make_api(workspace, "reviewer")
    response = reviewer.get("/api/v1/audit/export", {"format": fmt})
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert response["X-Audit-Digest"] == "sha256=" + hashlib.sha256(body).hexdigest()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in body.decode().splitlines()]
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    else:
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        note = next(r for r in rows if r["action"] == "note")
        assert note["object_repr"].startswith("'=")
    assert int(response["X-Audit-Rows"]) == len(rows)
    exported = AuditEvent.objects.filter(workspace=workspace, action="audit.exported").latest("seq")
    assert exported.after["sha256"] == hashlib.sha256(body).hexdigest()
    assert make_api(workspace, "sequencer").get("/api/v1/audit/export").status_code == 403


@pytest.mark.parametrize("stored, expected", [
    ("2026-11-23 05:10:47.00264+00", "2026-11-23T05:10:47.002640+00:00"),
    ("2026-11-23 05:10:47+00", "2026-11-23T05:10:47+00:00"),
    ("2026-11-23 05:10:47.123456+00", "2026-11-23T05:10:47.123456+00:00"),
    ("2026-11-23 05:10:47.5", "2026-11-23T05:10:47.500000+00:00"),
])
def test_exported_timestamps_match_isoformat(stored, expected):
    import datetime as dt

    from audit.export import _iso_text

    assert _iso_text(stored) == expected
    assert dt.datetime.fromisoformat(expected).isoformat() == expected
