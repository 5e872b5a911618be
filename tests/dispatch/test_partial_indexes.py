"""Message ids, thread keys and hand-off times are indexed only where they are set, and the lookups
that need them (provider reports, bounces, thread stickiness, the per-minute cap) still read those
indexes rather than the table."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane import bulk, policy
from controlplane.ids import new_id
from controlplane.models import Message
from providers.callbacks import ProviderEvent, match_message

pytestmark = pytest.mark.django_db


def _plan(sql):
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        return " ".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def messages(workspace, sending_setup):
    mailbox = sending_setup["mailboxes"][0]
    now = timezone.now()
    rows = [Message(id=new_id("msg"), workspace=workspace, mailbox=mailbox, to_address=f"lead{n}@example.com",
                    from_address=mailbox.address, subject="s", text="t", status="queued", scheduled_at=now,
                    reserved_day=now.date(), created_at=now - dt.timedelta(seconds=n), updated_at=now,
                    thread_key=f"thread-{n}" if n % 2 else "",
                    message_id_header=f"<m{n}@mail.acme.com>" if n % 3 == 0 else "",
                    provider_message_id=f"prov-{n}" if n % 3 == 0 else "") for n in range(3000)]
    bulk.insert(Message, rows)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")
    return rows


def test_only_messages_with_a_value_are_in_the_indexes(messages):
    with connection.cursor() as cursor:
        for index, column in (("message_id_header", "message_id_header"), ("message_provider_id", "provider_message_id"),
                              ("message_thread", "thread_key")):
            cursor.execute("SELECT pg_get_indexdef(%s::regclass)", [index])
            assert f"WHERE (NOT (({column})::text = ''::text))" in cursor.fetchone()[0]


def test_provider_reports_find_their_message_through_the_partial_indexes(workspace, messages):
    by_id = ProviderEvent(type="message.delivered", provider_message_id="prov-3")
    by_header = ProviderEvent(type="message.bounced", provider_message_id="", message_id_header="<m6@mail.acme.com>")
    with CaptureQueriesContext(connection) as queries:
        assert match_message(workspace, by_id).pk == messages[3].pk
        assert match_message(workspace, by_header).pk == messages[6].pk
    plans = [_plan(q["sql"]) for q in queries.captured_queries]
    assert "message_provider_id" in plans[0], plans[0]
    assert "message_id_header" in plans[1], plans[1]
    assert all("Seq Scan" not in plan for plan in plans), plans


def test_thread_stickiness_reads_the_partial_thread_index(workspace, messages):
    with CaptureQueriesContext(connection) as queries:
        found = policy.sticky_mailbox_ids(workspace, ["thread-5", "thread-7", ""])
    assert found == {"thread-5": messages[5].mailbox_id, "thread-7": messages[7].mailbox_id}
    plan = _plan(queries.captured_queries[0]["sql"])
    assert "message_thread" in plan and "Seq Scan" not in plan, plan


def test_the_per_minute_cap_counts_recent_hand_offs_from_the_handed_off_index(workspace, sending_setup, messages):
    from controlplane import dispatch
    from mailboxes.models import Mailbox

    mailbox = sending_setup["mailboxes"][0]
    now = timezone.now()
    Message.objects.filter(pk__in=[m.pk for m in messages[:5]]).update(status="sent", sent_at=now - dt.timedelta(seconds=10))
    Message.objects.filter(pk=messages[5].pk).update(status="delivered", sent_at=now - dt.timedelta(seconds=90))
    Mailbox.objects.filter(pk=mailbox.pk).update(per_minute_cap=3)
    mailbox.refresh_from_db()
    with CaptureQueriesContext(connection) as queries:
        latest = dispatch._minute(mailbox, now)
    assert latest == [now - dt.timedelta(seconds=10)] * 3  # the minute is full: three hand-offs within it
    recent = next(q["sql"] for q in queries.captured_queries if "sent_at" in q["sql"])
    plan = _plan(recent)
    assert "message_mailbox_handed_off" in plan and "Seq Scan" not in plan, plan
