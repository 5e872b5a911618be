"""Workspace-wide suppression: normalised, domain-wide, one index probe, safe under concurrency."""

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from suppression import services
from suppression.models import Suppression
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db


def test_matching_is_case_insensitive_and_domain_wide(workspace, other_workspace):
    services.suppress(workspace=workspace, value="  Jane@Acme.COM ", reason="unsubscribe")
    services.suppress(workspace=workspace, value="@Globex.com", reason="dnc")
    assert services.is_suppressed(workspace, "jane@acme.com")
    assert services.is_suppressed(workspace, "JANE@ACME.COM")
    assert not services.is_suppressed(workspace, "john@acme.com")
    assert services.is_suppressed(workspace, "anyone@globex.com")
    assert not services.is_suppressed(other_workspace, "jane@acme.com")
    assert services.find(workspace, "x@GLOBEX.com").value == "@globex.com"


def test_check_is_a_single_index_probe(workspace):
    services.bulk_import(workspace=workspace, values=[f"user{n}@example.com" for n in range(20000)])
    services.suppress(workspace=None, value="@agency-wide.example")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE suppression_suppression")
    with CaptureQueriesContext(connection) as ctx:
        assert services.is_suppressed(workspace, "user42@example.com")
    assert len(ctx.captured_queries) == 1
    sql = ctx.captured_queries[0]["sql"]
    assert "value_hash" in sql and "LIKE" not in sql.upper()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
    assert "suppression_value_unique" in plan and "suppression_global_value_unique" in plan, plan


def test_invalid_values_are_refused(workspace):
    for bad in ["", "jane", "jane@", "@", "jane@localhost", "a b@acme.com"]:
        with pytest.raises(services.InvalidValue):
            services.suppress(workspace=workspace, value=bad)
    assert Suppression.objects.count() == 0


def test_bulk_import_reports_and_is_atomic(workspace):
    services.suppress(workspace=workspace, value="old@acme.com")
    result = services.bulk_import(
        workspace=workspace,
        values=["new@acme.com", "NEW@acme.com", "old@acme.com", "not-an-address", "@acme.org", ""],
    )
    assert result.as_dict() == {"created": 2, "existing": 1, "invalid": ["not-an-address"]}
    assert Suppression.objects.filter(workspace=workspace).count() == 3

    def boom():
        yield "first@acme.com"
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        services.bulk_import(workspace=workspace, values=boom())
    assert not services.is_suppressed(workspace, "first@acme.com")


def test_read_values_handles_csv_and_lines():
    assert list(services.read_values(["email,name", "a@x.com,A", "b@x.com,B"])) == ["a@x.com", "b@x.com"]
    assert list(services.read_values(["a@x.com", "b@x.com"])) == ["a@x.com", "b@x.com"]
    assert list(services.read_values(["name;Address", "A;a@x.com"])) == ["a@x.com"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_adds_of_one_value_create_one_entry(workspace):
    barrier = threading.Barrier(8)
    outcomes = []

    def add():
        try:
            barrier.wait()
            outcomes.append(services.suppress(workspace=workspace, value="race@acme.com", reason="unsubscribe")[1])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Suppression.objects.filter(workspace=workspace).count() == 1
    assert outcomes.count(True) == 1 and len(outcomes) == 8
    assert AuditEvent.objects.filter(workspace=workspace, action="suppression.created").count() == 1


def test_api_add_bulk_check_delete(api, make_api, workspace):
    r = api.post("/api/v1/suppressions", {"value": "Jane@Acme.com", "reason": "unsubscribe", "note": "asked"},
                 format="json")
    assert r.status_code == 201 and r.json()["value"] == "jane@acme.com"
    again = api.post("/api/v1/suppressions", {"value": "jane@acme.com"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    assert_error(api.post("/api/v1/suppressions", {"value": "nope"}, format="json"), 400, "validation_error")
    assert_error(api.post("/api/v1/suppressions", {"value": "a@b.com", "reason": "whim"}, format="json"), 400,
                 "validation_error")
    bulk = api.post("/api/v1/suppressions/bulk", {"values": ["a@acme.com", "jane@acme.com", "bad"]}, format="json")
    assert bulk.json() == {"created": 1, "existing": 1, "invalid": ["bad"]}
    check = api.get("/api/v1/suppressions/check", {"address": "JANE@acme.com"}).json()
    assert check["suppressed"] and check["matched"] == "jane@acme.com" and check["reason"] == "unsubscribe"
    assert api.get("/api/v1/suppressions", {"reason": "import"}).json()["results"][0]["value"] == "a@acme.com"
    assert api.get("/api/v1/suppressions", {"value": "A@ACME.COM"}).json()["results"][0]["value"] == "a@acme.com"
    sequencer = make_api(workspace, "sequencer")
    assert sequencer.post("/api/v1/suppressions", {"value": "s@acme.com"}, format="json").status_code == 201
    assert_error(sequencer.delete(f"/api/v1/suppressions/{r.json()['id']}"), 403, "permission_denied")
    assert_error(make_api(workspace, "reviewer").post("/api/v1/suppressions", {"value": "r@acme.com"}, format="json"),
                 403, "permission_denied")
    assert api.delete(f"/api/v1/suppressions/{r.json()['id']}").status_code == 204
    assert api.get("/api/v1/suppressions/check", {"address": "jane@acme.com"}).json() == {"suppressed": False}
    removed = AuditEvent.objects.get(workspace=workspace, action="suppression.deleted")
    assert removed.before["value"].startswith("j***@acme.com (sha256:") and removed.actor_type == "api_key"
