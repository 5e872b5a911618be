"""The domain and workspace rates the circuit breakers judge and the mailbox page shows: which sends and reports
count, the same figures on both, and at a cost that does not grow with the messages a page leaves out."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.ids import new_id
from controlplane.models import Event, Message
from mailboxes.models import Mailbox, SendingDomain
from mailboxes.services import breakers, health
from tests.admin.conftest import change_url
from tests.providers.conftest import make_mailbox

pytestmark = pytest.mark.django_db

RELAY = {"host": "127.0.0.1", "port": 2525, "security": "none"}


def mailbox_on(workspace, domain, local, **fields):
    mailbox = make_mailbox(workspace, "smtp", settings=RELAY, domain=domain, local=local)
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
    return Mailbox.objects.select_related("workspace", "domain").get(pk=mailbox.pk)


def sends(mailbox, count, *, ago=dt.timedelta(hours=1), status="sent"):
    at = timezone.now() - ago
    return Message.objects.bulk_create([
        Message(workspace=mailbox.workspace, mailbox=mailbox, from_address=mailbox.address,
                to_address=f"lead{n}-{new_id('x')}@prospect.example", subject="Hello", text="Hi", status=status,
                scheduled_at=at, sent_at=at + dt.timedelta(seconds=n) if status != "queued" else None)
        for n in range(count)])


def reported(messages, type="message.bounced", **data):
    """Provider reports of `messages`, an hour after each was sent (written as the events path stores them)."""
    Event.objects.bulk_create([
        Event(id=new_id("evt"), workspace=m.workspace, message=m, type=type,
              occurred_at=(m.sent_at or timezone.now()) + dt.timedelta(hours=1), data=data) for m in messages])


def figures(rates):
    return rates["sends"], rates["hard_bounces"], rates["complaints"]


@pytest.fixture
def history(workspace, other_workspace):
    """Domain mail.acme.com: ann (counted), bob (paused by a breaker), cat (resumed 30 minutes ago); domain
    news.acme.com (paused by a breaker): dan."""
    ann = mailbox_on(workspace, "mail.acme.com", "ann")
    counted = sends(ann, 30)
    reported(counted[:3], bounce_type="hard")
    reported(counted[:1], bounce_type="hard")  # the same bounce reported twice counts once
    reported(counted[3:5], bounce_type="soft")
    reported(counted[5:6], type="message.complained")
    reported(sends(ann, 5, ago=dt.timedelta(days=8)), bounce_type="hard")  # before the 7-day window
    reported(sends(ann, 2, status="failed"), bounce_type="hard")  # never handed off
    sends(ann, 3, status="queued")

    bob = mailbox_on(workspace, "mail.acme.com", "bob", status="paused", breaker_rule="mailbox_hard_bounce")
    reported(sends(bob, 10), bounce_type="hard")

    cat = mailbox_on(workspace, "mail.acme.com", "cat",
                     health_since=timezone.now() - dt.timedelta(minutes=30))
    reported(sends(cat, 10), bounce_type="hard")  # before its resume
    reported(sends(cat, 4, ago=dt.timedelta(minutes=10))[:1], type="message.complained")

    dan = mailbox_on(workspace, "news.acme.com", "dan")
    SendingDomain.objects.filter(pk=dan.domain_id).update(paused=True, breaker_rule="domain_complaint")
    reported(sends(dan, 20)[:2], type="message.complained")

    eve = mailbox_on(other_workspace, "mail.globex.com", "eve")
    reported(sends(eve, 10), type="message.complained")
    return {"ann": ann, "dan": Mailbox.objects.select_related("workspace", "domain").get(pk=dan.pk)}


def test_a_domain_and_its_workspace_count_only_the_sends_their_breakers_judge(workspace, history):
    mail, news = history["ann"].domain, history["dan"].domain

    assert figures(health.rates(mail)) == (34, 3, 2)  # ann's 30 and cat's 4 since its resume
    assert figures(health.rates(news)) == (20, 0, 2)  # a paused domain still shows its own figures
    assert figures(health.rates(workspace)) == (34, 3, 2)  # without the breaker-paused domain
    rates = health.rates(mail)
    assert rates["days"] == 7 and rates["window"] is None
    assert str(rates["hard_bounce_rate"])[:6] == "0.0882"


def test_the_mailbox_page_reads_both_scopes_at_once_with_the_figures_the_breakers_judge(
        workspace, history, client, make_user):
    ann, dan = history["ann"], history["dan"]

    assert health.scope_rates(ann) == {"domain": health.rates(ann.domain), "workspace": health.rates(workspace)}
    assert health.scope_rates(dan) == {"domain": health.rates(dan.domain), "workspace": health.rates(workspace)}
    state = breakers.state_for(ann)
    # the mailbox is judged over its last sends, whatever their age
    assert [figures(scope["figures"]) for scope in state["scopes"]] == [(35, 8, 1), (34, 3, 2), (34, 3, 2)]

    client.force_login(make_user("vera", workspace=workspace, role="viewer"))
    page = client.get(change_url(ann)).content.decode()
    domain_row = page[page.index('id="breaker-domain"'):page.index('id="breaker-workspace"')]
    assert "over 34 sends of the last 7 days" in domain_row and "hard-bounce 8.8% (3)" in domain_row


def test_the_scope_rates_cost_the_same_queries_whatever_the_number_of_mailboxes_and_sends(workspace, history):
    ann = history["ann"]
    with CaptureQueriesContext(connection) as few:
        health.scope_rates(ann)
    for n in range(6):
        reported(sends(mailbox_on(workspace, f"d{n}.acme.com", f"rep{n}"), 25)[:2], bounce_type="hard")

    with CaptureQueriesContext(connection) as many:
        rates = health.scope_rates(ann)

    assert len(many) == len(few) == 2
    assert figures(rates["workspace"]) == (34 + 150, 3 + 12, 2)
