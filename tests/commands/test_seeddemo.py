import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from providers.models import ProviderConnection
from suppression import services as suppression
from suppression.models import Suppression
from tests.commands.helpers import run
from workspaces import services as workspace_services
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db


def test_seeds_a_complete_demo_workspace_once():
    out, _ = run("seeddemo")
    assert "0 already present" in out
    workspace = Workspace.objects.get(slug="demo")
    domains = SendingDomain.objects.for_workspace(workspace)
    assert domains.count() == 2
    assert all(any("._domainkey." in r["name"] for r in d.records_to_publish()) for d in domains)
    providers = {p.kind: p for p in ProviderConnection.objects.for_workspace(workspace)}
    assert set(providers) == {"smtp", "mailgun"}
    assert providers["smtp"].settings == {"host": "127.0.0.1", "port": 1025, "security": "none"}
    assert providers["mailgun"].credentials["api_key"]
    assert WarmupProfile.objects.for_workspace(workspace).count() == 1
    mailboxes = Mailbox.objects.for_workspace(workspace)
    assert mailboxes.count() == 6
    assert mailboxes.filter(warmup_profile__isnull=False, warmup_started_on__isnull=False).exists()
    assert all(m.address.endswith("@" + m.domain.name) for m in mailboxes)
    pools = {p.strategy: p for p in Pool.objects.for_workspace(workspace)}
    assert pools["round_robin"].workloads == ["cold"] and pools["round_robin"].mailboxes.count() >= 2
    assert pools["priority"].workloads == ["warm"] and pools["priority"].mailboxes.count() >= 2
    assert Suppression.objects.for_workspace(workspace).filter(is_domain=True).exists()
    assert suppression.is_suppressed(workspace, "unsubscribed@example.org")

    events = AuditEvent.objects.filter(workspace=workspace)
    assert set(events.values_list("actor_label", flat=True)) == {"command:seeddemo"}
    actions = set(events.values_list("action", flat=True))
    assert {"workspace.created", "domain.created", "provider.created", "warmup_profile.created",
            "mailbox.created", "pool.created", "suppression.created", "dkim_key.generated"} <= actions
    assert "demo-not-a-real-api-key" not in str(list(events.values_list("after", flat=True)))

    count = events.count()
    out, _ = run("seeddemo")
    assert " 0 object(s) created" in out
    assert AuditEvent.objects.filter(workspace=workspace).count() == count
    assert Mailbox.objects.for_workspace(workspace).count() == 6

    run("verifyaudit", "--workspace", "demo")


def test_demo_data_is_served_by_the_api():
    run("seeddemo")
    _, raw = workspace_services.create_api_key(workspace=Workspace.objects.get(slug="demo"), name="t", role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    response = client.get("/api/v1/mailboxes")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 6
