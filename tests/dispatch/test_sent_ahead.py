"""prepared.SentAhead: a statement sent at once and its result read when needed (hand-off's journal)."""

import datetime as dt

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from controlplane import dispatch, prepared
from controlplane.models import HandOff

pytestmark = pytest.mark.django_db(transaction=True)

SQL = dispatch._journal_sql("postgresql")
AT = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


def _row(n, **changes):
    values = {"message_id": f"msg_{n}", "event_id": f"evt_{n}", "sent_at": AT, "message_id_header": f"<{n}@x>",
              "provider_message_id": "", "provider_response": "250 ok", "event_data": '{"n": %d}' % n, **changes}
    return list(values.values())


def _prepared_here():
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE %s",
                       ["INSERT INTO controlplane_handoff%"])
        return cursor.fetchall()


def test_each_statement_commits_once_its_result_is_read_and_the_next_waits_for_it():
    with prepared.SentAhead(SQL) as journal:
        assert not journal.direct
        journal.send(_row(1))
        journal.send(_row(2))  # reads the first one's result before it goes
        journal.wait()
        assert not journal.pending
        assert list(HandOff.objects.order_by("message_id").values_list("message_id", "event_data")) == \
            [("msg_1", {"n": 1}), ("msg_2", {"n": 2})]
        journal.send(_row(3, sent_at=None, provider_response="451"))  # NOT NULL: fails in PostgreSQL
        with pytest.raises(DatabaseError, match="sent_at"):
            journal.wait()
    # The connection is still good, and the failed one wrote nothing.
    assert sorted(HandOff.objects.values_list("message_id", flat=True)) == ["msg_1", "msg_2"]
    assert HandOff.objects.get(message_id="msg_1").sent_at == AT


def test_an_error_surfaces_at_the_next_send_at_the_latest():
    with prepared.SentAhead(SQL) as journal:
        journal.send(_row(1))
        journal.send(_row(1))  # the same key again
        with pytest.raises(DatabaseError, match="duplicate key"):
            journal.send(_row(2))
    assert list(HandOff.objects.values_list("message_id", flat=True)) == ["msg_1"]


def test_prepared_once_per_connection_and_again_after_a_deallocation():
    for n in range(3):
        with prepared.SentAhead(SQL) as journal:
            journal.send(_row(n))
    assert len(_prepared_here()) == 1
    with prepared.SentAhead(SQL) as journal:
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")  # as psycopg does on ROLLBACK
        assert _prepared_here() == []
        journal.send(_row(7))
        journal.send(_row(8))
    assert HandOff.objects.count() == 5 and len(_prepared_here()) == 1


def test_runs_as_a_plain_statement_while_queries_are_logged_or_inside_a_transaction(settings):
    with CaptureQueriesContext(connection) as queries:
        with prepared.SentAhead(SQL) as journal:
            assert journal.direct
            journal.send(_row(1))
    assert [q["sql"] for q in queries.captured_queries if "controlplane_handoff" in q["sql"]]
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            with prepared.SentAhead(SQL) as journal:
                assert journal.direct
                journal.send(_row(2))
            raise RuntimeError("rolled back: the statement with it")
    settings.PREPARED_STATEMENTS = False
    with prepared.SentAhead(SQL) as journal:
        assert journal.direct
        journal.send(_row(3))
    assert sorted(HandOff.objects.values_list("message_id", flat=True)) == ["msg_1", "msg_3"]
