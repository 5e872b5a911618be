"""dispatch.Journal: the hand-off journal's rows of one round, written in one statement."""

import datetime as dt

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from controlplane import dispatch
from controlplane.models import HandOff
from providers.base import SendResult

pytestmark = pytest.mark.django_db(transaction=True)


class _Sent:
    """What Journal.add reads of a claimed message."""

    def __init__(self, n):
        self.pk, self.mailbox_id, self.message_id_header = f"msg_{n}", "mbx_1", f"<{n}@x>"
        self.mailbox = type("Mailbox", (), {"provider": type("Provider", (), {"kind": "smtp"})()})()


def _journal(*numbers):
    journal = dispatch.Journal()
    for n in numbers:
        journal.add(_Sent(n), SendResult(provider_message_id=f"<{n}@x>", response=f"250 ok {n}"))
    return journal


def test_a_rounds_rows_are_one_statement_and_are_there_once_it_returns():
    journal = _journal(1, 2, 3)
    with CaptureQueriesContext(connection) as queries:
        journal.flush()
    assert len([q for q in queries.captured_queries if "controlplane_handoff" in q["sql"]]) == 1
    rows = list(HandOff.objects.order_by("message_id").values_list("message_id", "provider_response", "event_data"))
    assert rows == [(f"msg_{n}", f"250 ok {n}", {"mailbox": "mbx_1", "provider": "smtp", "provider_message_id": f"<{n}@x>",
                                                "response": f"250 ok {n}"}) for n in (1, 2, 3)]
    assert all(row.sent_at and row.event_id.startswith("evt_") for row in HandOff.objects.all())
    assert journal.recorded == ["msg_1", "msg_2", "msg_3"]
    with CaptureQueriesContext(connection) as queries:
        journal.flush()  # nothing new: no statement
    assert queries.captured_queries == []


def test_a_turn_that_fails_writes_none_of_its_rows_and_says_so():
    _journal(1).flush()
    journal = _journal(2, 1)  # msg_1 again: the key is taken
    with pytest.raises(DatabaseError, match="duplicate key"):
        journal.flush()
    assert list(HandOff.objects.values_list("message_id", flat=True)) == ["msg_1"]
    assert journal.recorded == []
