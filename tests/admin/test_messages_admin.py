"""Messages and events in the admin: what each user sees, the evidence page, and cancelling."""

import datetime as dt

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from controlplane import events, intake
from controlplane.models import Event, Message
from mailboxes.models import MailboxDailyUsage
from tests.admin.conftest import add_url, change_url, changelist_url, messages_of, url

pytestmark = pytest.mark.django_db

WEDNESDAY_MORNING = dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.timezone.utc)


def send(ids, to, *, now=WEDNESDAY_MORNING, **fields):
    """A message accepted through the same path as the API's POST /messages."""
    status, body = intake.submit(workspace=ids.workspace, now=now, serialize=lambda message: {"id": message.id},
                                 data={"to": to, "subject": "Quick question", "text": "Hello there", **fields})
    assert status == 202, body
    return Message.objects.get(pk=body["id"])


def hand_off(message, *, reply="250 2.0.0 Ok: queued as 4QX1", provider_id="4QX1", at=None):
    """What the dispatcher records when the provider accepts the message."""
    at = at or WEDNESDAY_MORNING + dt.timedelta(minutes=1)
    Message.objects.filter(pk=message.pk).update(
        status="sent", sent_at=at, attempts=1, provider_message_id=provider_id, provider_response=reply,
        message_id_header=f"<{message.id}@{message.mailbox.domain.name}>")
    message.refresh_from_db()
    events.emit(workspace=message.workspace, type="message.sent", message=message, occurred_at=at,
                data={"mailbox": message.mailbox_id, "provider": "smtp", "provider_message_id": provider_id,
                      "response": reply})
    return message


def report(message, event_type, minutes, **data):
    """A provider's callback about `message`, `minutes` after the test's morning."""
    events.emit(workspace=message.workspace, type=event_type, message=message,
                occurred_at=WEDNESDAY_MORNING + dt.timedelta(minutes=minutes), data=data)
    message.refresh_from_db()
    return message


def page_of(response):
    assert response.status_code == 200
    return response.content.decode()


# What each user sees ---------------------------------------------------------------------------


def test_the_list_shows_each_messages_status_recipient_sender_and_workload(login, acme):
    waiting = send(acme, "jane@prospect.com")
    sent = hand_off(send(acme, "joe@prospect.com", workload="cold"))

    page = page_of(login("viewer").get(changelist_url(Message)))

    for message in (waiting, sent):
        assert message.id in page
        assert message.to_address in page
    assert acme.mailbox.address in page
    assert ">queued<" in page or ">scheduled<" in page
    assert ">sent<" in page
    assert ">cold<" in page


def test_another_workspaces_messages_are_not_listed_and_answer_like_missing_ones(login, acme, globex):
    ours = send(acme, "jane@prospect.com")
    theirs = send(globex, "jane@prospect.com")
    client = login("owner")

    page = page_of(client.get(changelist_url(Message)))
    foreign, missing = client.get(change_url(theirs)), client.get(change_url(theirs).replace(theirs.id, "msg_nope"))

    assert ours.id in page and theirs.id not in page
    assert globex.mailbox.address not in page
    assert foreign.status_code == missing.status_code == 302
    assert foreign.url == missing.url == url("index")


def test_search_finds_a_recipient_by_exact_address_in_any_case(login, acme):
    jane = send(acme, "jane@prospect.com")
    joe = send(acme, "joe@prospect.com")
    client = login("viewer")

    exact = page_of(client.get(changelist_url(Message), {"q": "  Jane@Prospect.COM "}))
    partial = page_of(client.get(changelist_url(Message), {"q": "jane"}))

    assert jane.id in exact and joe.id not in exact
    assert jane.id not in partial


def test_search_finds_a_message_by_its_id_or_message_id_header(login, acme):
    sent = hand_off(send(acme, "jane@prospect.com"))
    other = send(acme, "joe@prospect.com")
    client = login("viewer")

    by_id = page_of(client.get(changelist_url(Message), {"q": sent.id}))
    by_header = page_of(client.get(changelist_url(Message), {"q": sent.message_id_header}))

    assert sent.id in by_id and other.id not in by_id
    assert sent.id in by_header and other.id not in by_header


def test_filters_narrow_by_status_workload_and_mailbox_of_the_users_workspaces_only(login, acme, globex):
    acme.pool.workloads = ["cold", "warm"]
    acme.pool.save()
    cold = hand_off(send(acme, "jane@prospect.com"))
    warm = send(acme, "joe@prospect.com", workload="warm")
    client = login("viewer")

    by_status = page_of(client.get(changelist_url(Message), {"status__exact": "sent"}))
    by_workload = page_of(client.get(changelist_url(Message), {"workload": "warm"}))
    by_mailbox = page_of(client.get(changelist_url(Message), {"mailbox__id__exact": acme.mailbox.pk}))

    assert cold.id in by_status and warm.id not in by_status
    assert warm.id in by_workload and cold.id not in by_workload
    assert cold.id in by_mailbox and warm.id in by_mailbox
    assert globex.mailbox.address not in by_mailbox


def test_messages_cannot_be_added_or_edited_even_by_an_owner(login, acme):
    message = send(acme, "jane@prospect.com")
    client = login("owner")

    add_page = client.get(add_url(Message))
    edit = client.post(change_url(message), {"to_address": "someone@else.com", "status": "sent"})

    message.refresh_from_db()
    assert add_page.status_code == 403
    assert edit.status_code == 403
    assert message.to_address == "jane@prospect.com" and message.status != "sent"
    assert "Add message" not in page_of(client.get(changelist_url(Message)))


# The evidence page ------------------------------------------------------------------------------


def test_the_message_page_reads_as_one_line_of_evidence(login, acme):
    message = hand_off(send(acme, "jane@prospect.com"))
    report(message, "message.delivered", 2, source="smtp")
    report(message, "message.bounced", 30, bounce_type="hard", reply="550 5.1.1 user unknown")

    page = page_of(login("viewer").get(change_url(message)))

    decision, handoff, reply, timeline = (page.index(f'id="{part}"') for part in ("decision", "handoff", "reply",
                                                                                  "events"))
    assert decision < handoff < reply < timeline
    assert acme.mailbox.address in page[decision:handoff]
    assert "rotation (round robin) within the pool" in page[decision:handoff]
    assert "sent today of 20 allowed" in page[decision:handoff]
    assert "2025-01-15 10:00:00 UTC" in page[decision:handoff]
    assert acme.provider.name in page[handoff:reply] and "(smtp)" in page[handoff:reply]
    assert f"&lt;{message.id}@mail.acme.com&gt;" in page[handoff:reply]
    assert "<th>Attempts</th><td>1</td>" in page[handoff:reply]
    assert "250 2.0.0 Ok: queued as 4QX1" in page[reply:timeline]
    order = [page.index(name, timeline) for name in ("message.accepted", "message.sent", "message.delivered",
                                                      "message.bounced", "suppression.created")]
    assert order == sorted(order)
    assert "550 5.1.1 user unknown" in page[timeline:]
    assert "2025-01-15 10:30:00 UTC" in page[timeline:]
    assert "<strong>bounced</strong>" in page


def test_an_erased_message_shows_its_trail_without_the_address(login, acme):
    from controlplane import recipients

    message = hand_off(send(acme, "jane@prospect.com"))
    recipients.erase(workspace=acme.workspace, address="jane@prospect.com")

    page = page_of(login("viewer").get(change_url(message)))

    assert "jane@prospect.com" not in page
    assert "(erased)" in page
    assert "message.sent" in page


# Cancelling -------------------------------------------------------------------------------------


def cancel(client, *selected):
    return client.post(changelist_url(Message), {"action": "cancel_messages",
                                                 "_selected_action": [m.pk for m in selected]}, follow=True)


def test_an_operator_cancels_waiting_messages_and_hears_why_others_were_not(login, acme, users):
    first = send(acme, "jane@prospect.com")
    second = send(acme, "joe@prospect.com")
    sent = hand_off(send(acme, "ann@prospect.com"))
    day = first.reserved_day
    reserved = MailboxDailyUsage.objects.get(mailbox=acme.mailbox, day=day).count

    response = cancel(login("operator"), first, second, sent)

    notes = " ".join(messages_of(response))
    assert "Cancelled 2 messages" in notes
    assert "1 message was not cancelled" in notes
    assert f"{sent.id} is sent: already handed off to the provider" in notes
    assert {m.status for m in Message.objects.filter(pk__in=[first.pk, second.pk])} == {"cancelled"}
    assert Message.objects.get(pk=sent.pk).status == "sent"
    assert MailboxDailyUsage.objects.get(mailbox=acme.mailbox, day=day).count == reserved - 2
    assert Event.objects.filter(message=first, type="message.cancelled").exists()
    record = AuditEvent.objects.get(action="message.cancelled", object_id=first.pk)
    assert record.actor_label == users["operator"].username


def test_cancelling_twice_says_the_message_is_already_cancelled(login, acme):
    message = send(acme, "jane@prospect.com")
    client = login("operator")
    cancel(client, message)

    notes = " ".join(messages_of(cancel(client, message)))

    assert f"{message.id} is cancelled: already cancelled" in notes
    assert Event.objects.filter(message=message, type="message.cancelled").count() == 1


@pytest.mark.parametrize("who", ["viewer", "reviewer"])
def test_viewers_and_reviewers_cannot_cancel(login, acme, who):
    message = send(acme, "jane@prospect.com")
    client = login(who)

    listing = page_of(client.get(changelist_url(Message)))
    page = page_of(client.get(change_url(message)))
    by_action = cancel(client, message)
    by_button = client.post(url("controlplane_message_cancel", message.pk))

    message.refresh_from_db()
    assert "cancel_messages" not in listing
    assert "Cancel this message" not in page
    assert by_button.status_code == 403
    assert message.status in {"queued", "scheduled"}
    assert not Event.objects.filter(message=message, type="message.cancelled").exists()
    assert "Cancelled" not in " ".join(messages_of(by_action))


def test_an_operator_cannot_cancel_another_workspaces_message(login, acme, globex):
    theirs = send(globex, "jane@prospect.com")
    client = login("operator")

    cancel(client, theirs)
    button = client.post(url("controlplane_message_cancel", theirs.pk))

    theirs.refresh_from_db()
    assert theirs.status in {"queued", "scheduled"}
    assert button.status_code == 302 and button.url == url("index")


def test_the_message_page_offers_cancel_while_waiting_and_cancels(login, acme):
    message = send(acme, "jane@prospect.com")
    client = login("operator")

    before = page_of(client.get(change_url(message)))
    response = client.post(url("controlplane_message_cancel", message.pk), follow=True)
    after = page_of(response)

    assert "Cancel this message" in before
    assert "Cancelled 1 message" in " ".join(messages_of(response))
    assert "<strong>cancelled</strong>" in after
    assert "Cancel this message" not in after
    assert client.get(url("controlplane_message_cancel", message.pk)).status_code == 405


# Events -----------------------------------------------------------------------------------------


def test_events_list_shows_the_users_workspace_only_and_filters_by_type(login, acme, globex):
    ours = hand_off(send(acme, "jane@prospect.com"))
    theirs = hand_off(send(globex, "jane@prospect.com"))
    client = login("viewer")

    page = page_of(client.get(changelist_url(Event)))
    sent_only = client.get(changelist_url(Event), {"type": "message.sent"})

    assert ours.id in page and theirs.id not in page
    assert "message.accepted" in page and "message.sent" in page
    assert "4QX1" in page
    assert [event.type for event in sent_only.context["cl"].result_list] == ["message.sent"]


def test_an_event_opens_read_only_and_links_to_its_message(login, acme, globex):
    message = hand_off(send(acme, "jane@prospect.com"))
    event = Event.objects.get(message=message, type="message.sent")
    foreign = Event.objects.filter(workspace=globex.workspace).first() or hand_off(
        send(globex, "joe@prospect.com")).events.first()
    client = login("owner")

    page = page_of(client.get(change_url(event)))
    edit = client.post(change_url(event), {"type": "message.delivered"})
    add = client.get(add_url(Event))

    event.refresh_from_db()
    assert f'href="{url("controlplane_message_change", quote(message.pk))}"' in page
    assert "to jane@prospect.com" in page and "250 2.0.0 Ok" in page
    assert edit.status_code == 403 and event.type == "message.sent"
    assert add.status_code == 403
    assert client.get(change_url(foreign)).status_code == 302


# Lists are cheap --------------------------------------------------------------------------------


def bulk_messages(ids, count, start):
    for n in range(start, start + count):
        message = Message.objects.create(
            workspace=ids.workspace, mailbox=ids.mailbox, pool=ids.pool, to_address=f"lead{n}@prospect.com",
            from_address=ids.mailbox.address, subject="Hi", text="Hello", status="sent",
            scheduled_at=WEDNESDAY_MORNING, sent_at=WEDNESDAY_MORNING)
        events.emit(workspace=ids.workspace, type="message.sent", message=message, data={"n": n})


def queries_for(client, model, params=None):
    client.get(changelist_url(model), params or {})
    with CaptureQueriesContext(connection) as captured:
        response = client.get(changelist_url(model), params or {})
    assert response.status_code == 200
    return len(captured), len(response.context["cl"].result_list)


@pytest.mark.parametrize("model", [Message, Event], ids=["messages", "events"])
@pytest.mark.parametrize("who", ["operator", "superuser"])
def test_list_query_count_does_not_grow_with_the_page(login, acme, globex, model, who):
    client = login(who)
    bulk_messages(globex, 1, 0)

    bulk_messages(acme, 2, 0)
    small, shown_small = queries_for(client, model)
    bulk_messages(acme, 18, 2)
    large, shown_large = queries_for(client, model)

    assert shown_large == shown_small + 18
    assert small == large
