"""A one-click unsubscribe keeps its evidence (when, IP, user agent, method) and every view of the address shows it."""

import csv
import io
import json

import pytest
from django.test import Client

from controlplane import mime
from controlplane.models import Event
from suppression.models import Suppression

pytestmark = pytest.mark.django_db(transaction=True)
ADDRESS = "jane.doe@prospect.example"
BROWSER = "Mozilla/5.0 (Macintosh) MailClient/2.1"


def accepted(api):
    response = api.post("/api/v1/messages", {"to": ADDRESS, "subject": "Hello", "text": "Hi"}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def one_click(message_id, **extra):
    return Client(REMOTE_ADDR="203.0.113.7").post(f"/u/{mime.unsubscribe_token(message_id)}",
                                                  {"List-Unsubscribe": "One-Click", **extra}, HTTP_USER_AGENT=BROWSER)


def test_the_one_click_post_is_kept_as_evidence_and_explained_by_the_check(api, make_api, workspace, sending_setup):
    message_id = accepted(api)

    assert one_click(message_id).status_code == 200

    entry = Suppression.objects.get(workspace=workspace, value=ADDRESS)
    event = Event.objects.get(type="message.unsubscribed", message_id=message_id)
    assert entry.evidence["method"] == "one_click_post" and entry.evidence["ip"] == "203.0.113.7"
    assert entry.evidence["user_agent"] == BROWSER and entry.evidence["message"] == message_id
    assert entry.source_event == event.id
    assert event.data["ip"] == "203.0.113.7" and event.data["user_agent"] == BROWSER
    assert event.data["at"] == entry.evidence["at"] and event.data["suppression"] == entry.pk
    check = make_api(workspace, "reviewer").get("/api/v1/suppressions/check", {"address": ADDRESS}).json()
    assert check["entry"]["reason"] == "unsubscribe" and check["entry"]["scope"] == "workspace"
    assert check["entry"]["source_event"] == event.id
    assert check["entry"]["evidence"] == entry.evidence


def test_the_confirmation_page_is_told_apart_from_the_mail_clients_post(api, workspace, sending_setup):
    message_id = accepted(api)
    page = Client().get(f"/u/{mime.unsubscribe_token(message_id)}").content.decode()
    assert 'name="from" value="confirmation_page"' in page

    one_click(message_id, **{"from": "confirmation_page"})

    assert Suppression.objects.get(workspace=workspace, value=ADDRESS).evidence["method"] == "confirmation_page"


def test_the_recipient_history_exports_the_evidence_in_json_and_csv(api, make_api, workspace, sending_setup):
    message_id = accepted(api)
    one_click(message_id)
    reviewer = make_api(workspace, "reviewer")

    history = reviewer.get(f"/api/v1/recipients/{ADDRESS}").json()
    assert history["suppression"]["evidence"]["ip"] == "203.0.113.7"
    assert history["suppression"]["entry"]["evidence"]["user_agent"] == BROWSER
    assert history["suppression"]["scope"] == "address"  # unchanged: what the entry covers

    rows = list(csv.DictReader(io.StringIO(
        reviewer.get(f"/api/v1/recipients/{ADDRESS}", {"format": "csv"}).content.decode())))
    [suppression_row] = [r for r in rows if r["event"] == "suppression"]
    exported = json.loads(suppression_row["event_data"])
    assert exported["evidence"]["ip"] == "203.0.113.7" and exported["evidence"]["method"] == "one_click_post"
    assert suppression_row["status"] == "suppressed"


def test_erasure_removes_the_evidence_with_the_address(api, workspace, sending_setup):
    message_id = accepted(api)
    one_click(message_id)

    api.post(f"/api/v1/recipients/{ADDRESS}/erase")

    entry = Suppression.objects.get(workspace=workspace)
    assert entry.value == "" and entry.evidence == {}
    assert api.get(f"/api/v1/recipients/{ADDRESS}").json()["suppression"]["evidence"] is None
