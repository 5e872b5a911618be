"""A pool may mix providers: an unpinned send whose provider keeps failing moves to another provider's mailbox."""

import pytest
import responses

from mailboxes.models import Pool
from tests.providers.conftest import make_mailbox

pytestmark = pytest.mark.django_db(transaction=True)


def test_transient_failures_on_one_provider_fail_over_to_another(api, workspace, run_workers):
    failing = make_mailbox(workspace, "mailgun", local="ann", settings={"domain": "mail.acme.com"},
                           credentials={"api_key": "key-x"})
    healthy = make_mailbox(workspace, "postmark", local="bob", credentials={"server_token": "pm"})
    pool = Pool.objects.create(workspace=workspace, name="mixed", strategy="priority", workloads=["cold"])
    pool.mailboxes.set([failing, healthy])
    failing.priority = 10
    failing.save()
    with responses.RequestsMock() as fake:
        down = fake.post("https://api.mailgun.net/v3/mail.acme.com/messages.mime", status=503, body="unavailable")
        fake.post("https://api.postmarkapp.com/email", json={
            "To": "prospect@example.com", "SubmittedAt": "2026-03-02T10:00:00Z",
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0, "Message": "OK"})
        created = api.post("/api/v1/messages", {"to": "prospect@example.com", "subject": "Hi", "text": "Hello"},
                           format="json").json()
        assert created["from"] == failing.address
        run_workers()
    message = api.get(f"/api/v1/messages/{created['id']}").json()
    assert down.call_count == 3  # the first try and both retries (DISPATCH_RETRY_DELAYS = [0, 0])
    assert message["status"] == "sent" and message["from"] == healthy.address
    assert message["provider_message_id"] == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    assert message["decision"]["failover_from"] == failing.pk
    assert message["message_id_header"].endswith("@mail.acme.com>")
