"""`bulk.new`: the instances a batch intake writes are built without `Model.__init__`, yet are the
instances it would have built."""

import datetime as dt

import pytest
from django.db.models import signals
from django.utils import timezone

from audit.models import AuditEvent
from controlplane import bulk
from controlplane.models import Event, Message
from mailboxes.models import Pool

pytestmark = pytest.mark.django_db


def _same(made, built):
    assert type(made) is type(built)
    assert {k: v for k, v in made.__dict__.items() if k != "_state"} == \
        {k: v for k, v in built.__dict__.items() if k != "_state"}
    assert (made._state.adding, made._state.db, made._state.fields_cache) == \
        (built._state.adding, built._state.db, built._state.fields_cache)


@pytest.fixture
def mailbox(sending_setup):
    return sending_setup["mailboxes"][0]


def _message_values(workspace, mailbox, pool):
    now = timezone.now()
    return dict(id="msg_fixed", workspace=workspace, mailbox=mailbox, pool=pool, pinned=False, to_address="a@b.example",
                from_address=mailbox.address, subject="Hi", text="Body", status="queued", scheduled_at=now,
                reserved_day=dt.date(2026, 11, 23), decision={"mailbox": mailbox.pk}, created_at=now, updated_at=now)


def test_new_builds_what_model_init_builds(workspace, mailbox):
    pool = Pool.objects.create(workspace=workspace, name="warm")
    for pool_value in (pool, None):
        values = _message_values(workspace, mailbox, pool_value)
        made, built = Message(**values), bulk.new(Message, **dict(values))
        _same(made, built)
        # defaults are applied, each instance getting its own (a dict default is not shared)
        assert built.headers == {} and built.html == "" and built.attempts == 0 and built.sent_at is None
        assert built.headers is not bulk.new(Message, **dict(values)).headers
        assert built._state.adding and built._state.db == "default"
        assert built.mailbox is mailbox and built.workspace is workspace and built.pool is pool_value
    event = dict(id="evt_fixed", workspace=workspace, message=None, type="message.accepted",
                 occurred_at=timezone.now(), data={"a": 1})
    _same(Event(**event), bulk.new(Event, **dict(event)))
    entry = dict(workspace=workspace, chain=workspace.pk, seq=3, occurred_at=timezone.now(), actor_type="system",
                 actor_id="", actor_label="tests", action="message.accepted", object_type="message", object_id="msg_x",
                 object_repr="msg_x", before=None, after={"mailbox": mailbox.pk}, request_id="", ip=None,
                 prev_hash="0" * 64)
    made, built = AuditEvent(**entry), bulk.new(AuditEvent, **dict(entry))
    assert made.id != built.id  # a fresh id from the field's default, as Model.__init__ draws one
    built.id = made.id
    _same(made, built)


def test_new_instances_save_and_read_back(workspace, mailbox):
    messages = [bulk.new(Message, **{**_message_values(workspace, mailbox, None), "id": f"msg_{n}",
                                     "to_address": f"lead{n}@b.example"}) for n in range(bulk.COPY_FROM + 1)]
    bulk.insert(Message, messages)
    stored = Message.objects.get(pk="msg_3")
    assert (stored.to_address, stored.mailbox_id, stored.workspace_id, stored.headers) == \
        ("lead3@b.example", mailbox.pk, workspace.pk, {})
    assert not messages[3]._state.adding


def test_new_refuses_what_model_init_refuses(workspace, mailbox):
    values = _message_values(workspace, mailbox, None)
    with pytest.raises(TypeError, match="unexpected keyword arguments: 'colour'"):
        bulk.new(Message, **values, colour="red")
    with pytest.raises(ValueError, match='"Message.mailbox" must be a "Mailbox" instance'):
        bulk.new(Message, **{**values, "mailbox": workspace})


def test_new_uses_model_init_while_something_listens(workspace, mailbox):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    signals.post_init.connect(receiver, sender=Message)
    try:
        built = bulk.new(Message, **_message_values(workspace, mailbox, None))
    finally:
        signals.post_init.disconnect(receiver, sender=Message)
    assert seen == [built]
