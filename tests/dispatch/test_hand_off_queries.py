"""Hand-off reads each message and each mailbox (with its domain, workspace and provider) in one
statement per batch: nothing is loaded again field by field."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane import dispatch
from controlplane.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def _hand_off(api, count):
    for n in range(count):
        assert api.post("/api/v1/messages", {"to": f"lead{n}@example.com", "subject": "s", "text": "t"},
                        format="json").status_code == 202
    ids = list(Message.objects.filter(status="queued").values_list("mailbox_id", flat=True).distinct())
    with CaptureQueriesContext(connection) as queries:
        dispatch.dispatch_mailboxes(ids)
    assert Message.objects.filter(status="sent").count() == count
    Message.objects.all().delete()
    return [q["sql"] for q in queries.captured_queries]


def test_hand_off_reads_in_a_fixed_number_of_statements(api, sending_setup, smtp_sink):
    few, many = _hand_off(api, 3), _hand_off(api, 9)
    # One statement per message records its hand-off; everything else is per batch.
    assert len(many) - len(few) == 6, "\n".join(many)
    # and no field left out of a batch read is fetched on its own afterwards (Django's refresh_from_db)
    assert not [sql for sql in few + many if "LIMIT 21" in sql], "\n".join(few)
    assert len(smtp_sink.messages) == 12
