"""A key sees nothing of another workspace: lists omit it, ids answer 404, references are invalid."""

import pytest

from tests.api.helpers import assert_error, create_identities

pytestmark = pytest.mark.django_db

COLLECTIONS = {"domain": "domains", "provider": "providers", "warmup": "warmup-profiles", "mailbox": "mailboxes",
               "pool": "pools", "suppression": "suppressions"}


@pytest.fixture
def two(api, other_api):
    mine = create_identities(api)
    theirs = create_identities(other_api, domain="mail.globex.com", local="hank")
    return mine, theirs


def test_lists_show_only_own_workspace(api, two):
    mine, theirs = two
    for kind, path in COLLECTIONS.items():
        body = api.get(f"/api/v1/{path}").json()
        ids = [row["id"] for row in body["results"]]
        assert ids == [mine[kind]], (path, ids)
        assert body["next"] is None


def test_other_workspace_objects_are_404_everywhere(api, two):
    _, theirs = two
    for kind, path in COLLECTIONS.items():
        assert_error(api.get(f"/api/v1/{path}/{theirs[kind]}"), 404, "not_found")
    assert_error(api.patch(f"/api/v1/mailboxes/{theirs['mailbox']}", {"daily_cap": 1}, format="json"), 404, "not_found")
    assert_error(api.patch(f"/api/v1/providers/{theirs['provider']}", {"name": "x"}, format="json"), 404, "not_found")
    assert_error(api.patch(f"/api/v1/pools/{theirs['pool']}", {"name": "x"}, format="json"), 404, "not_found")
    assert_error(api.post(f"/api/v1/mailboxes/{theirs['mailbox']}/pause", {"reason": "x"}, format="json"), 404, "not_found")
    assert_error(api.delete(f"/api/v1/suppressions/{theirs['suppression']}"), 404, "not_found")


def test_unknown_id_answers_exactly_like_another_workspaces(api, two):
    _, theirs = two
    foreign = api.get(f"/api/v1/mailboxes/{theirs['mailbox']}")
    missing = api.get("/api/v1/mailboxes/mbx_doesnotexist")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_references_to_another_workspace_are_invalid(api, two):
    mine, theirs = two
    r = api.post("/api/v1/mailboxes", {"address": "bob@mail.acme.com", "provider": theirs["provider"]}, format="json")
    error = assert_error(r, 400, "validation_error")
    assert "provider" in error["fields"]
    r = api.patch(f"/api/v1/pools/{mine['pool']}", {"mailboxes": [theirs["mailbox"]]}, format="json")
    assert "mailboxes" in assert_error(r, 400, "validation_error")["fields"]
    r = api.patch(f"/api/v1/mailboxes/{mine['mailbox']}", {"warmup_profile": theirs["warmup"]}, format="json")
    assert "warmup_profile" in assert_error(r, 400, "validation_error")["fields"]


def test_mailbox_on_another_workspaces_domain_is_rejected(api, two):
    r = api.post("/api/v1/mailboxes", {"address": "eve@mail.globex.com", "provider": two[0]["provider"]}, format="json")
    error = assert_error(r, 400, "validation_error")
    assert "not a sending domain of this workspace" in error["fields"]["address"][0]


def test_suppression_check_and_audit_are_per_workspace(api, other_api, two):
    assert api.get("/api/v1/suppressions/check", {"address": "nope@mail.acme.com"}).json()["suppressed"] is True
    assert other_api.get("/api/v1/suppressions/check", {"address": "nope@mail.acme.com"}).json() == {"suppressed": False}
    mine = api.get("/api/v1/audit").json()["results"]
    theirs = other_api.get("/api/v1/audit").json()["results"]
    assert {e["id"] for e in mine}.isdisjoint({e["id"] for e in theirs})
    assert all("globex" not in (e["object_repr"] or "") for e in mine)
    export = api.get("/api/v1/audit/export", {"format": "jsonl"})
    assert b"globex" not in b"".join(export.streaming_content)
