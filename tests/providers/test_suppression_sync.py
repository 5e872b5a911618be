"""ESP suppression sync: the provider's list comes into the workspace's, our removals go back to the provider.

Provider APIs are faked at the HTTP layer, with the providers' documented payloads: a loopback HTTP server for
Amazon SES (boto3 speaks HTTP through its own stack), `responses` for Postmark and SendGrid.
"""

import datetime as dt
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from audit.models import AuditEvent
from providers import suppression_sync
from providers.services import create_connection
from suppression import services
from suppression.models import ProviderSuppressionSync, Suppression
from providers.models import ProviderConnection
from tests.admin.conftest import change_url, changelist_url, messages_of

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.timezone.utc
LONG_AGO = dt.datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
LATELY = dt.datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
POSTMARK = "https://api.postmarkapp.com/message-streams/outbound/suppressions"
SENDGRID = "https://api.sendgrid.com/v3"


@pytest.fixture
def login(client, make_user, workspace):
    people = {}

    def log_in(role):
        if role not in people:
            people[role] = (make_user("root", superuser=True) if role == "superuser"
                            else make_user(role, workspace=workspace, role=role))
        client.force_login(people[role])
        return client

    return log_in


def removed(workspace, address):
    """An entry our users removed from the workspace's list (now, i.e. after LONG_AGO and LATELY)."""
    entry, _ = services.suppress(workspace=workspace, value=address, reason="hard_bounce")
    services.remove(entry=entry)


def entry_of(workspace, address):
    return Suppression.objects.filter(workspace=workspace, value=address).first()


def ses_connection(workspace, http_fake):
    return create_connection(workspace=workspace, kind="ses", name="ses-eu",
                             settings={"region": "eu-west-1", "api_url": http_fake.url},
                             credentials={"access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret"})


def ses_api(pages):
    """SESv2 as documented: GET /v2/email/suppression/addresses pages with NextToken, DELETE …/{EmailAddress}."""
    def answer(handler):
        path = urlsplit(handler.path)
        if handler.command == "GET" and path.path == "/v2/email/suppression/addresses":
            token = parse_qs(path.query).get("NextToken", ["0"])[0]
            return 200, {"Content-Type": "application/json"}, json.dumps(pages[int(token)])
        if handler.command == "DELETE" and path.path.startswith("/v2/email/suppression/addresses/"):
            return 200, {"Content-Type": "application/json"}, "{}"
        return 404, {"Content-Type": "application/json"}, json.dumps({"message": "not found"})

    return answer


def test_ses_list_is_imported_and_our_removal_is_deleted_there(workspace, http_fake):
    connection = ses_connection(workspace, http_fake)
    services.suppress(workspace=workspace, value="known@acme.com", reason="manual")
    removed(workspace, "gone@acme.com")
    http_fake.default = ses_api([
        {"SuppressedDestinationSummaries": [
            {"EmailAddress": "Bounced@Acme.com", "Reason": "BOUNCE", "LastUpdateTime": LATELY.timestamp()},
            {"EmailAddress": "gone@acme.com", "Reason": "BOUNCE", "LastUpdateTime": LONG_AGO.timestamp()},
        ], "NextToken": "1"},
        {"SuppressedDestinationSummaries": [
            {"EmailAddress": "complained@acme.com", "Reason": "COMPLAINT", "LastUpdateTime": LONG_AGO.timestamp()},
            {"EmailAddress": "known@acme.com", "Reason": "BOUNCE", "LastUpdateTime": LATELY.timestamp()},
        ]},
    ])

    outcome = suppression_sync.sync_connection(connection.pk)

    assert outcome == {"listed": 4, "imported": 2, "pushed": 1, "not_pushed": 0}
    bounced, complained = entry_of(workspace, "bounced@acme.com"), entry_of(workspace, "complained@acme.com")
    assert (bounced.reason, bounced.source, bounced.created_at) == ("hard_bounce", "provider_sync", LATELY)
    assert (complained.reason, complained.created_at) == ("complaint", LONG_AGO)
    assert entry_of(workspace, "known@acme.com").reason == "manual"
    assert entry_of(workspace, "gone@acme.com") is None
    deletes = [r for r in http_fake.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == ["/v2/email/suppression/addresses/gone%40acme.com"]
    assert deletes[0].headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    state = ProviderSuppressionSync.objects.get(connection=connection)
    assert (state.listed, state.imported, state.pushed, state.not_pushed) == (4, 2, 1, [])
    synced = AuditEvent.objects.get(action="suppression.synced")
    assert synced.after["created"] == 2 and synced.actor_label == "suppression sync (ses-eu)"
    assert AuditEvent.objects.get(action="suppression.removals_pushed").after["pushed"][0].startswith("g***@acme")


def test_a_provider_entry_newer_than_our_removal_is_imported_again(workspace, http_fake):
    connection = ses_connection(workspace, http_fake)
    removed(workspace, "again@acme.com")
    later = dt.datetime.now(UTC) + dt.timedelta(minutes=5)
    http_fake.default = ses_api([{"SuppressedDestinationSummaries": [
        {"EmailAddress": "again@acme.com", "Reason": "BOUNCE", "LastUpdateTime": later.timestamp()}]}])

    suppression_sync.sync_connection(connection.pk)

    assert entry_of(workspace, "again@acme.com").reason == "hard_bounce"
    assert not [r for r in http_fake.requests if r.method == "DELETE"]


def test_ses_refusal_is_recorded_and_shown(workspace, http_fake, login):
    connection = ses_connection(workspace, http_fake)
    http_fake.default = (403, {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"},
                         json.dumps({"message": "not authorized to perform ses:ListSuppressedDestinations"}))

    outcome = suppression_sync.sync_connection(connection.pk)

    assert "AccessDeniedException" in outcome["error"]
    state = ProviderSuppressionSync.objects.get(connection=connection)
    assert "AccessDeniedException" in state.last_error and state.last_success_at is None
    page = login("superuser").get(changelist_url(ProviderSuppressionSync)).content.decode()
    assert "AccessDeniedException" in page


def postmark_dump(*suppressions):
    return {"Suppressions": [{"EmailAddress": address, "SuppressionReason": reason, "Origin": origin,
                              "CreatedAt": created} for address, reason, origin, created in suppressions]}


def test_postmark_import_and_a_removal_it_keeps_is_shown(workspace, login):
    connection = create_connection(workspace=workspace, kind="postmark", name="postmark",
                                   credentials={"server_token": "pm-token"})
    removed(workspace, "complainer@acme.com")
    removed(workspace, "bouncer@acme.com")
    with responses.RequestsMock() as fake:
        fake.get(f"{POSTMARK}/dump", json=postmark_dump(
            ("left@acme.com", "ManualSuppression", "Recipient", "2026-10-01T08:00:00-04:00"),
            ("blocked@acme.com", "ManualSuppression", "Customer", "2026-10-02T08:00:00-04:00"),
            ("complainer@acme.com", "SpamComplaint", "Recipient", "2026-01-05T09:30:00-05:00"),
            ("bouncer@acme.com", "HardBounce", "Recipient", "2026-01-05T09:30:00-05:00"),
        ))
        delete = fake.post(f"{POSTMARK}/delete", json={"Suppressions": [
            {"EmailAddress": "complainer@acme.com", "Status": "Failed",
             "Message": "You do not have the required authority to change this suppression."},
            {"EmailAddress": "bouncer@acme.com", "Status": "Deleted", "Message": None},
        ]})

        outcome = suppression_sync.sync_connection(connection.pk)

        assert fake.calls[0].request.headers["X-Postmark-Server-Token"] == "pm-token"
        assert json.loads(delete.calls[0].request.body) == {"Suppressions": [
            {"EmailAddress": "complainer@acme.com"}, {"EmailAddress": "bouncer@acme.com"}]}
    assert outcome == {"listed": 4, "imported": 2, "pushed": 1, "not_pushed": 1}
    left = entry_of(workspace, "left@acme.com")
    assert left.reason == "unsubscribe" and left.created_at == dt.datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    assert entry_of(workspace, "blocked@acme.com").reason == "manual"
    assert entry_of(workspace, "complainer@acme.com") is None  # our removal stands; the disagreement is shown
    [kept] = ProviderSuppressionSync.objects.get(connection=connection).not_pushed
    assert kept["address"].startswith("c***@acme.com") and "required authority" in kept["problem"]
    page = login("superuser").get(changelist_url(ProviderSuppressionSync)).content.decode()
    assert "postmark" in page.lower()
    detail = login("superuser").get(change_url(ProviderSuppressionSync.objects.get())).content.decode()
    assert "required authority to change this suppression" in detail


def test_sendgrid_lists_are_imported_and_a_removed_bounce_is_deleted(workspace):
    connection = create_connection(workspace=workspace, kind="sendgrid", name="sendgrid",
                                   credentials={"api_key": "SG.key"})
    removed(workspace, "gone@acme.com")
    old, new = int(LONG_AGO.timestamp()), int(LATELY.timestamp())
    with responses.RequestsMock() as fake:
        fake.get(f"{SENDGRID}/suppression/bounces", json=[
            {"created": new, "email": "bounced@acme.com", "reason": "550 5.1.1 unknown user", "status": "5.1.1"},
            {"created": old, "email": "gone@acme.com", "reason": "550 5.1.1 unknown user", "status": "5.1.1"}])
        fake.get(f"{SENDGRID}/suppression/spam_reports", json=[
            {"created": new, "email": "angry@acme.com", "ip": "10.63.202.100"}])
        fake.get(f"{SENDGRID}/suppression/unsubscribes", json=[{"created": old, "email": "bye@acme.com"}])
        delete = fake.delete(f"{SENDGRID}/suppression/bounces/gone@acme.com", status=204)

        outcome = suppression_sync.sync_connection(connection.pk)

        assert delete.call_count == 1
        assert all(call.request.headers["Authorization"] == "Bearer SG.key" for call in fake.calls)
        assert parse_qs(urlsplit(fake.calls[0].request.url).query) == {"limit": ["500"], "offset": ["0"]}
    assert outcome == {"listed": 4, "imported": 3, "pushed": 1, "not_pushed": 0}
    assert {(e.value, e.reason) for e in Suppression.objects.filter(workspace=workspace)} == {
        ("bounced@acme.com", "hard_bounce"), ("angry@acme.com", "complaint"), ("bye@acme.com", "unsubscribe")}


def test_the_admin_action_queues_a_sync_and_is_audited(workspace, login, run_workers):
    connection = create_connection(workspace=workspace, kind="sendgrid", name="sendgrid",
                                   credentials={"api_key": "SG.key"})
    smtp = create_connection(workspace=workspace, kind="smtp", name="relay",
                             settings={"host": "127.0.0.1", "port": 25, "security": "none"})
    client = login("operator")

    response = client.post(changelist_url(ProviderConnection), {"action": "sync_suppressions_now",
                                                        "_selected_action": [connection.pk, smtp.pk]}, follow=True)

    notes = messages_of(response)
    assert "Queued a suppression sync of 1 provider connection." in notes
    assert any(note.startswith("Skipped 1: only SES, Postmark and SendGrid") for note in notes)
    event = AuditEvent.objects.get(action="provider.suppression_sync_requested")
    assert event.actor == "user:operator" and event.object_id == connection.pk
    with responses.RequestsMock() as fake:
        for name in ("bounces", "spam_reports", "unsubscribes"):
            fake.get(f"{SENDGRID}/suppression/{name}", json=[])
        run_workers()
    assert ProviderSuppressionSync.objects.get(connection=connection).last_success_at is not None


def test_a_viewer_cannot_start_a_sync(workspace, login):
    connection = create_connection(workspace=workspace, kind="sendgrid", name="sendgrid",
                                   credentials={"api_key": "SG.key"})

    login("viewer").post(changelist_url(ProviderConnection), {"action": "sync_suppressions_now",
                                                      "_selected_action": [connection.pk]})

    assert not AuditEvent.objects.filter(action="provider.suppression_sync_requested").exists()


def test_the_sync_runs_hourly_for_every_esp_connection_with_credentials(workspace, redis_conn):
    from rq.cron import CronScheduler

    from controlplane.queues import queue, redis_connection

    create_connection(workspace=workspace, kind="postmark", name="pm", credentials={"server_token": "t"})
    create_connection(workspace=workspace, kind="sendgrid", name="no-key")
    create_connection(workspace=workspace, kind="mailgun", name="mg", settings={"domain": "mg.acme.com"},
                      credentials={"api_key": "k"})
    scheduler = CronScheduler(connection=redis_connection())
    scheduler.load_config_from_file("controlplane.cron")
    [job] = [j for j in scheduler.get_jobs() if j.name == "provider-suppression-sync"]
    assert job.interval == 3600

    assert suppression_sync.enqueue_all() == 1
    assert [j.args for j in queue("default").jobs] == [(ProviderConnection.objects.get(name="pm").pk,)]
