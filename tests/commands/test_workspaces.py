"""createworkspace, createapikey, createuser, grantrole, revokerole: what each really changes."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.commands.helpers import run
from workspaces import roles
from workspaces.models import Workspace, WorkspaceAPIKey
from workspaces.scoping import workspaces_for_user

pytestmark = pytest.mark.django_db


def last_event(**filters):
    return AuditEvent.objects.filter(**filters).order_by("-occurred_at", "-seq").first()


class TestCreateWorkspace:
    def test_creates_an_audited_workspace(self):
        out, _ = run("createworkspace", "initech", "--name", "Initech", "--timezone", "America/Chicago",
                     "--postal-address", "4120 Freidrich Lane, Austin TX")
        workspace = Workspace.objects.get(slug="initech")
        assert (workspace.name, workspace.timezone) == ("Initech", "America/Chicago")
        assert workspace.postal_address == "4120 Freidrich Lane, Austin TX"
        assert "initech" in out and workspace.pk in out
        event = AuditEvent.objects.get(workspace=workspace, action="workspace.created")
        assert (event.actor_type, event.actor_label) == ("system", "command:createworkspace")

    def test_default_timezone_is_utc(self):
        run("createworkspace", "hooli", "--name", "Hooli")
        assert Workspace.objects.get(slug="hooli").timezone == "UTC"

    def test_unknown_timezone_is_a_clear_error_and_creates_nothing(self):
        with pytest.raises(CommandError, match="timezone.*Mars/Olympus"):
            run("createworkspace", "mars", "--name", "Mars", "--timezone", "Mars/Olympus")
        assert not Workspace.objects.filter(slug="mars").exists()

    def test_duplicate_slug_is_a_clear_error(self, workspace):
        with pytest.raises(CommandError, match="already exists"):
            run("createworkspace", workspace.slug, "--name", "Again")
        assert Workspace.objects.filter(slug=workspace.slug).count() == 1

    def test_name_is_required(self):
        with pytest.raises(CommandError):
            run("createworkspace", "nameless")


class TestCreateApiKey:
    def test_last_line_is_a_key_that_authenticates(self, workspace, other_workspace):
        out, _ = run("createapikey", workspace.slug, "crm sync")
        raw = out.strip().splitlines()[-1]
        key = WorkspaceAPIKey.objects.get(name="crm sync")
        assert (key.workspace, key.role) == (workspace, "sequencer")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
        assert client.get("/api/v1/domains").status_code == 200
        assert client.get("/api/v1/workspace").json()["slug"] == workspace.slug
        event = AuditEvent.objects.get(workspace=workspace, action="api_key.created", object_id=key.prefix)
        assert event.actor_label == "command:createapikey"
        assert raw not in str(event.after) and raw.partition(".")[2] not in str(event.after)

    def test_role_option(self, workspace):
        out, _ = run("createapikey", workspace.slug, "auditor", "--role", "reviewer")
        raw = out.strip().splitlines()[-1]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
        assert client.get("/api/v1/audit").status_code == 200
        assert WorkspaceAPIKey.objects.get(name="auditor").role == "reviewer"

    def test_unknown_role_or_workspace(self, workspace):
        with pytest.raises(CommandError):
            run("createapikey", workspace.slug, "x", "--role", "owner")
        with pytest.raises(CommandError, match="No workspace"):
            run("createapikey", "nope", "x")
        assert not WorkspaceAPIKey.objects.exists()


class TestCreateUser:
    def test_generated_password_is_printed_and_works(self):
        out, _ = run("createuser", "jane", "--email", "jane@example.com")
        user = get_user_model().objects.get(username="jane")
        assert user.is_staff and not user.is_superuser and user.is_active
        assert user.email == "jane@example.com"
        password = out.strip().splitlines()[-1].removeprefix("Password: ")
        assert user.check_password(password)
        event = AuditEvent.objects.get(chain="global", action="user.created", object_id=str(user.pk))
        assert event.workspace is None and event.actor_label == "command:createuser"
        assert password not in str(event.after)

    def test_given_password(self):
        out, _ = run("createuser", "joe", "--password", "correct horse battery")
        assert get_user_model().objects.get(username="joe").check_password("correct horse battery")
        assert "correct horse battery" not in out

    def test_sees_no_workspace_until_granted(self, workspace):
        run("createuser", "bob")
        assert not workspaces_for_user(get_user_model().objects.get(username="bob")).exists()

    def test_refusals(self, make_user):
        make_user("taken")
        with pytest.raises(CommandError, match="already exists"):
            run("createuser", "taken")
        with pytest.raises(CommandError, match="too short"):
            run("createuser", "shorty", "--password", "abc")
        assert not get_user_model().objects.filter(username="shorty").exists()


class TestRoles:
    def test_grant_and_revoke_change_what_the_user_sees(self, workspace, other_workspace, make_user):
        user = make_user("carol")
        assert list(workspaces_for_user(user)) == []

        out, _ = run("grantrole", "carol", workspace.slug, "viewer")
        assert "viewer" in out
        user = get_user_model().objects.get(pk=user.pk)
        assert list(workspaces_for_user(user)) == [workspace]
        assert not workspaces_for_user(user, "identities").exists()

        run("grantrole", "carol", workspace.slug, "operator")
        user = get_user_model().objects.get(pk=user.pk)
        assert roles.role_of(user, workspace) == "operator"
        assert list(workspaces_for_user(user, "identities")) == [workspace]

        run("revokerole", "carol", workspace.slug)
        user = get_user_model().objects.get(pk=user.pk)
        assert not workspaces_for_user(user).exists()
        actions = list(AuditEvent.objects.filter(workspace=workspace, action__startswith="role.")
                       .order_by("seq").values_list("action", "actor_label"))
        assert actions == [("role.granted", "command:grantrole"), ("role.granted", "command:grantrole"),
                           ("role.revoked", "command:revokerole")]

    def test_errors(self, workspace, make_user):
        make_user("dave")
        with pytest.raises(CommandError, match="Unknown role"):
            run("grantrole", "dave", workspace.slug, "emperor")
        with pytest.raises(CommandError, match="holds no role"):
            run("revokerole", "dave", workspace.slug)
        with pytest.raises(CommandError, match="No user"):
            run("grantrole", "nobody", workspace.slug, "viewer")
        with pytest.raises(CommandError, match="No workspace"):
            run("grantrole", "dave", "nowhere", "viewer")
