"""Intake places a batch with a fixed number of statements whatever its size, and reads no mailbox
field it left out afterwards (Django's refresh_from_db, one statement per mailbox)."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.models import Message
from mailboxes.models import WarmupProfile

pytestmark = pytest.mark.django_db(transaction=True)


def _batch(api, count, start, **extra):
    body = {"messages": [{"to": f"lead{n}@example.com", "subject": "s", "text": "t", **extra}
                         for n in range(start, start + count)]}
    with CaptureQueriesContext(connection) as queries:
        response = api.post("/api/v1/messages/batch", body, format="json")
    assert response.status_code == 200, response.json()
    assert all("id" in item for item in response.json()["results"]), response.json()
    return [q["sql"] for q in queries.captured_queries]


def _assert_same_statements(few, many):
    assert len(few) == len(many), "\n".join(many)
    assert not [sql for sql in few + many if "LIMIT 21" in sql], "\n".join(many)


@pytest.mark.parametrize("strategy", ["round_robin", "weighted", "priority"])
def test_a_batch_is_placed_in_a_fixed_number_of_statements(api, sending_setup, strategy):
    pool = sending_setup["pool"]
    pool.strategy = strategy
    pool.save()
    ramp = WarmupProfile.objects.create(workspace=pool.workspace, name="ramp", start=20, step=5, max=50)
    sending_setup["mailboxes"][0].__class__.objects.filter(pk=sending_setup["mailboxes"][0].pk).update(
        warmup_profile=ramp, warmup_started_on=timezone.localdate() - dt.timedelta(days=1))
    _batch(api, 3, 0)  # first use: the pool's caches and counters exist from here on
    few, many = _batch(api, 3, 100), _batch(api, 12, 200)
    _assert_same_statements(few, many)
    assert Message.objects.count() == 18
    assert Message.objects.values("mailbox").distinct().count() == 3


def test_thread_keys_keep_a_batch_to_a_fixed_number_of_statements(api, sending_setup):
    _batch(api, 3, 0, thread_key="t")
    few, many = _batch(api, 3, 100, thread_key="t"), _batch(api, 12, 200, thread_key="t")
    _assert_same_statements(few, many)
    assert Message.objects.values("mailbox").distinct().count() == 1


def test_pinned_sends_keep_a_batch_to_a_fixed_number_of_statements(api, sending_setup):
    sender = sending_setup["mailboxes"][1].address
    _batch(api, 3, 0, **{"from": sender})
    few, many = _batch(api, 3, 100, **{"from": sender}), _batch(api, 12, 200, **{"from": sender})
    _assert_same_statements(few, many)
    assert set(Message.objects.values_list("mailbox", flat=True)) == {sending_setup["mailboxes"][1].pk}
