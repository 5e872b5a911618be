"""“What happened with this prospect?” and data-subject erasure."""

import csv
import io

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditEvent
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db(transaction=True)
ADDRESS = "jane.doe@prospect.example"


def _send(api, **extra):
    r = api.post("/api/v1/messages", {"to": ADDRESS, "subject": "Jane, a question", "text": "Hello Jane Doe",
                                      "metadata": {"crm": ADDRESS}, **extra}, format="json", HTTP_IDEMPOTENCY_KEY=extra.get("subject", "k"))
    assert r.status_code == 202, r.json()
    return r.json()


def _tables_holding(text):
    """(table, column) pairs whose value contains `text`, over every text-like column of every table."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json')""")
        for table, column in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s', [f"%{text}%"])
            if cursor.fetchone()[0]:
                found.append((table, column))
    return found


def test_history_answers_what_happened(api, make_api, workspace, sending_setup, smtp_sink, run_workers):
    first = _send(api)
    run_workers()
    unsubscribe = "/u/" + smtp_sink.messages[0][2].split(b"/u/", 1)[1].split(b">", 1)[0].decode()
    done = Client().post(unsubscribe, {"List-Unsubscribe": "One-Click"}, HTTP_USER_AGENT="Mail/1.0")
    assert done.status_code == 200, (unsubscribe, done.content[:300])
    reviewer = make_api(workspace, "reviewer")
    data = reviewer.get(f"/api/v1/recipients/{ADDRESS.upper()}").json()
    assert data["address"] == ADDRESS and data["suppressed"] is True
    assert data["suppression"]["reason"] == "unsubscribe" and first["id"] in data["suppression"]["source"]
    assert "Mail/1.0" in data["suppression"]["note"]
    [message] = data["messages"]
    assert message["id"] == first["id"] and message["status"] == "sent" and message["provider"] == "smtp"
    assert message["decision"]["reason"].startswith("rotation")
    assert [e["type"] for e in message["events"]] == ["message.accepted", "message.sent", "message.unsubscribed",
                                                      "suppression.created"]
    rows = list(csv.DictReader(io.StringIO(reviewer.get(f"/api/v1/recipients/{ADDRESS}", {"format": "csv"}).content.decode())))
    assert [r["event"] for r in rows][:2] == ["message.accepted", "message.sent"]
    assert_error(reviewer.get(f"/api/v1/recipients/{ADDRESS}", {"format": "access"}), 403, "permission_denied")
    access = api.get(f"/api/v1/recipients/{ADDRESS}", {"format": "access"}).json()
    assert access["messages"][0]["text"] == "Hello Jane Doe"
    assert_error(api.get("/api/v1/recipients/not-an-address"), 400, "validation_error")


def test_erasure_leaves_no_clear_address_and_blocks_future_sends(api, make_api, workspace, sending_setup, smtp_sink,
                                                                  run_workers, other_api):
    _send(api)
    _send(api, subject="Second")
    api.post("/api/v1/messages", {"to": ADDRESS, "subject": "x", "text": "y", "from": "nobody@mail.acme.com"},
             format="json")
    run_workers()
    unsubscribe = "/u/" + smtp_sink.messages[0][2].split(b"/u/", 1)[1].split(b">", 1)[0].decode()
    Client().post(unsubscribe, {"List-Unsubscribe": "One-Click"})
    assert _tables_holding(ADDRESS), "the address is stored before erasure"
    assert_error(make_api(workspace, "sequencer").post(f"/api/v1/recipients/{ADDRESS}/erase"), 403,
                 "permission_denied")

    result = api.post(f"/api/v1/recipients/{ADDRESS}/erase").json()
    assert result["messages"] == 2 and result["previously_known"] is True
    assert _tables_holding(ADDRESS) == []
    assert _tables_holding("Jane Doe") == []
    assert_error(api.post("/api/v1/messages", {"to": ADDRESS, "subject": "s", "text": "t"}, format="json"), 422,
                 "suppressed")
    erased = AuditEvent.objects.get(workspace=workspace, action="recipient.erased")
    assert erased.after["messages"] == 2 and erased.actor_type == "api_key"
    assert api.get(f"/api/v1/recipients/{ADDRESS}").json()["suppressed"] is True


def test_erasing_an_unknown_address_still_suppresses_it(api, sending_setup):
    result = api.post("/api/v1/recipients/never.seen@prospect.example/erase").json()
    assert result["previously_known"] is False and result["messages"] == 0
    assert _tables_holding("never.seen@prospect.example") == []
    assert_error(api.post("/api/v1/messages", {"to": "never.seen@prospect.example", "subject": "s", "text": "t"},
                          format="json"), 422, "suppressed")
