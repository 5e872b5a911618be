"""Circuit breakers: rates warn about and pause a mailbox, a domain or a workspace; a cool-down resumes it, an
operator may override, and a mailbox resumed from an automatic pause re-ramps its cap."""

import datetime as dt
import math
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent
from controlplane import events
from controlplane.models import Event, Message
from mailboxes.models import Mailbox, SendingDomain, WarmupProfile
from mailboxes.services import breakers, caps
from tests.admin.conftest import change_url, changelist_url
from tests.providers.conftest import make_mailbox
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db(transaction=True)

RELAY = {"host": "127.0.0.1", "port": 2525, "security": "none"}


def mailbox_on(workspace, domain, local):
    return make_mailbox(workspace, "smtp", settings=RELAY, domain=domain, local=local)


def sent(mailbox, count, *, first=0):
    """`count` messages the mailbox handed off an hour ago (the history a breaker judges)."""
    at = timezone.now() - dt.timedelta(hours=1)
    return Message.objects.bulk_create([
        Message(workspace=mailbox.workspace, mailbox=mailbox, from_address=mailbox.address,
                to_address=f"lead{first + i}@{mailbox.domain.name}.example", subject="Hello", text="Hi", status="sent", scheduled_at=at,
                sent_at=at + dt.timedelta(seconds=i))
        for i in range(count)])


def report(message, type="message.complained", **data):
    """A provider's report of `message`, through the events path its callbacks take."""
    with transaction.atomic():
        message = Message.objects.select_for_update(of=("self",)).select_related("workspace").get(pk=message.pk)
        events.emit(workspace=message.workspace, type=type, message=message, data={"source": "test", **data})


def hard_bounce(message):
    report(message, "message.bounced", bounce_type="hard")


def audited(action, obj=None):
    entries = AuditEvent.objects.filter(action=action).order_by("seq")
    return list(entries.filter(object_id=obj.pk) if obj is not None else entries)


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def pinned(api, mailbox, to="new@prospect.example"):
    return api.post("/api/v1/messages", {"to": to, "from": mailbox.address, "subject": "Hi", "text": "Hello"},
                    format="json")


def test_complaint_rate_pauses_the_mailbox_until_the_cool_down_ends_then_its_cap_re_ramps(
        api, workspace, sending_setup, run_workers, smtp_sink):
    ann = sending_setup["mailboxes"][0]
    batch = [{"to": f"lead{i}@prospect.example", "from": ann.address, "subject": "Hello", "text": "Hi"}
             for i in range(40)]
    assert api.post("/api/v1/messages/batch", {"messages": batch}, format="json").status_code == 200
    run_workers()
    history = list(Message.objects.filter(mailbox=ann, status="sent").order_by("sent_at"))
    assert len(history) == 40

    paused_at = timezone.now()
    report(history[0])

    shown = api.get(f"/api/v1/mailboxes/{ann.pk}").json()
    assert shown["status"] == "paused"
    assert shown["paused_reason"] == ("Complaint rate 2.5% (1 of the last 40 sends) passes the workspace threshold "
                                      "of 0.3% (rule: mailbox complaint pause).")
    refused = pinned(api, ann)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "mailbox_paused"
    rotated = api.post("/api/v1/messages", {"to": "other@prospect.example", "subject": "Hi", "text": "Hello"},
                       format="json")
    assert rotated.status_code == 202 and rotated.json()["from"] != ann.address
    [paused_event] = api.get("/api/v1/events", {"type": "mailbox.paused"}).json()["results"]
    resume_at = dt.datetime.fromisoformat(paused_event["data"]["resume_at"])
    assert dt.timedelta(hours=24) <= resume_at - paused_at < dt.timedelta(hours=24, seconds=30)

    assert breakers.run(now=resume_at - dt.timedelta(hours=1))["resumed"] == []
    assert fresh(ann).status == "paused"
    assert breakers.run(now=resume_at + dt.timedelta(minutes=1))["resumed"] == [ann.pk]
    assert breakers.run(now=resume_at + dt.timedelta(minutes=2))["resumed"] == []

    shown = api.get(f"/api/v1/mailboxes/{ann.pk}").json()
    assert shown["status"] == "active"
    assert shown["usage"]["effective_cap_today"] == 25  # 0.5 × the daily cap of 50
    over_cap = pinned(api, ann)  # 40 sent today: room under the full cap, none under the re-ramped one
    assert over_cap.status_code == 422 and over_cap.json()["error"]["code"] == "cap_exhausted"
    ann = fresh(ann)
    start = ann.reramp_started_at.astimezone(ann.tz).date()
    assert caps.effective_cap_today(ann, start + dt.timedelta(days=3)) == math.ceil(50 * (0.5 + 0.5 * 3 / 7))
    assert caps.effective_cap_today(ann, start + dt.timedelta(days=7)) == 50

    # Old complaints arriving late do not trip it again: only sends after the resume count.
    report(history[1])
    assert fresh(ann).status == "active"

    [paused] = audited("mailbox.paused", ann)
    [resumed] = audited("mailbox.resumed", ann)
    assert paused.after["breaker_rule"] == "mailbox_complaint" and paused.after["resume_at"]
    assert resumed.actor == "system:circuit breakers"
    assert resumed.after["reason"].startswith("The cool-down after the automatic pause by the mailbox complaint "
                                              "rule ended")
    assert resumed.after["reramp"] == {"fraction": "0.50", "days": 7}
    assert [e["type"] for e in api.get("/api/v1/events", {"type": "mailbox.resumed"}).json()["results"]] == \
        ["mailbox.resumed"]


def test_re_ramp_never_exceeds_the_warm_up_allowance(workspace):
    mailbox = mailbox_on(workspace, "mail.acme.com", "ann")
    profile = WarmupProfile.objects.create(workspace=workspace, name="slow", start=10, step=0, max=10)
    Mailbox.objects.filter(pk=mailbox.pk).update(warmup_profile=profile, warmup_started_on=dt.date.today(),
                                                 daily_cap=50, reramp_started_at=timezone.now(),
                                                 reramp_fraction=Decimal("0.5"), reramp_days=7)
    mailbox = Mailbox.objects.select_related("warmup_profile").get(pk=mailbox.pk)
    today = caps.local_day(mailbox)
    assert caps.effective_cap_today(mailbox, today) == 10
    Mailbox.objects.filter(pk=mailbox.pk).update(warmup_profile=None)
    assert caps.effective_cap_today(fresh(mailbox), today) == 25


def test_a_domain_breaker_pauses_the_domain_when_its_mailboxes_together_pass_the_threshold(api, workspace):
    # Each mailbox alone has too few sends to be judged; together they are.
    mailboxes = [mailbox_on(workspace, "mail.acme.com", name) for name in ("ann", "bob", "cat")]
    history = [sent(m, 15, first=i * 100) for i, m in enumerate(mailboxes)]
    sent(mailbox_on(workspace, "news.acme.com", "dan"), 60)  # a healthy domain keeps the workspace under its rules

    for messages in history:
        hard_bounce(messages[0])
    domain = SendingDomain.objects.get(name="mail.acme.com")
    assert not fresh(domain).paused and fresh(domain).health_warning_rules == ["domain_hard_bounce"]
    hard_bounce(history[0][1])
    hard_bounce(history[1][1])  # 5 of 45 = 11.1 %

    domain = fresh(domain)
    assert domain.paused
    assert domain.paused_reason == ("Domain mail.acme.com: hard-bounce rate 11.1% (5 of 45 sends in the last 7 days) "
                                    "passes the pause threshold of 10.0% (rule: domain hard-bounce pause).")
    assert [fresh(m).status for m in mailboxes] == ["active"] * 3
    refused = pinned(api, mailboxes[0])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "domain_paused"
    assert len(audited("domain.health_warned", domain)) == 1
    assert not fresh(workspace).paused and fresh(workspace).health_warning_rules == []

    assert breakers.run(now=domain.resume_at + dt.timedelta(seconds=1))["resumed"] == [domain.pk]
    assert not fresh(domain).paused
    for mailbox in mailboxes:
        mailbox = fresh(mailbox)
        assert caps.effective_cap_today(mailbox, caps.local_day(mailbox)) == 250  # 0.5 × 500
    [resumed] = audited("domain.resumed", domain)
    assert resumed.actor == "system:circuit breakers" and resumed.after["reramp"]["mailboxes"] == 3
    assert len(audited("domain.paused", domain)) == 1
    assert audited("mailbox.paused") == []


def test_a_workspace_breaker_pauses_every_send_and_an_admin_may_resume_it_early(
        api, workspace, client, make_user):
    mailboxes = [mailbox_on(workspace, f"d{i}.acme.com", f"ann{i}") for i in range(3)]
    history = [sent(m, 10, first=i * 100) for i, m in enumerate(mailboxes)]

    report(history[2][0])  # 1 complaint in 30 sends

    workspace = fresh(workspace)
    assert workspace.paused and workspace.breaker_rule == "workspace_complaint"
    assert workspace.paused_reason.startswith("Workspace Acme: complaint rate 3.3% (1 of 30 sends in the last 7 days) "
                                              "passes the pause threshold of 0.3%")
    refused = pinned(api, mailboxes[0])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "workspace_paused"

    client.force_login(make_user("olga", workspace=workspace, role="operator"))
    client.post(changelist_url(Workspace), {"action": "resume_before_cooldown", "_selected_action": [workspace.pk],
                                            "apply": "yes", "reason": "List cleaned"})
    assert fresh(workspace).paused

    client.force_login(make_user("ada", workspace=workspace, role="admin"))
    confirm = client.post(changelist_url(Workspace), {"action": "resume_before_cooldown",
                                                      "_selected_action": [workspace.pk]})
    assert "reason" in confirm.content.decode() and fresh(workspace).paused
    client.post(changelist_url(Workspace), {"action": "resume_before_cooldown", "_selected_action": [workspace.pk],
                                            "apply": "yes", "reason": "The bad list was removed"})

    workspace = fresh(workspace)
    assert not workspace.paused and workspace.resume_at is None and workspace.breaker_rule == ""
    [resumed] = audited("workspace.resumed", workspace)
    assert resumed.actor == "user:ada" and resumed.after["reason"] == "The bad list was removed"
    for mailbox in mailboxes:
        mailbox = fresh(mailbox)
        assert caps.effective_cap_today(mailbox, caps.local_day(mailbox)) == 250
    assert pinned(api, mailboxes[0]).status_code == 202
    page = client.get(change_url(workspace)).content.decode()
    assert "Circuit breaker state" in page and "The rates past a warn threshold" in page
    assert breakers.run(now=timezone.now() + dt.timedelta(days=2))["resumed"] == []


def test_a_warning_is_shown_and_audited_once_per_crossing(workspace, client, make_user):
    mailbox = mailbox_on(workspace, "mail.acme.com", "ann")
    history = sent(mailbox, 100)

    for message in history[:3]:  # 3 % passes the 2.5 % warn threshold, not the 5 % pause
        hard_bounce(message)
    hard_bounce(history[3])  # 4 %: still the same warning

    mailbox = fresh(mailbox)
    assert mailbox.status == "active"
    assert mailbox.health_warning == ("Hard-bounce rate 3.0% (3 of the last 100 sends) passes the warn threshold "
                                      "of 2.5% (rule: mailbox hard-bounce warn).")
    [warned] = audited("mailbox.health_warned", mailbox)
    assert warned.after["health_warning_rules"] == ["mailbox_hard_bounce"]
    assert fresh(mailbox.domain).health_warning == ""  # 4 % is under the domain's 5 %

    client.force_login(make_user("vera", workspace=workspace, role="viewer"))
    page = client.get(change_url(mailbox)).content.decode()
    assert 'id="breaker-state"' in page and "passes the warn threshold of 2.5%" in page

    sent(mailbox, 100, first=1000)  # newer healthy sends push the rate down to 2 %
    breakers.run()
    assert fresh(mailbox).health_warning == ""
    assert len(audited("mailbox.health_warning_cleared", mailbox)) == 1
    assert len(audited("mailbox.health_warned", mailbox)) == 1


def test_an_operator_may_postpone_cancel_and_end_the_cool_down_each_audited_with_the_reason(
        workspace, client, make_user):
    mailbox = mailbox_on(workspace, "mail.acme.com", "ann")
    history = sent(mailbox, 50)
    report(history[0])
    mailbox = fresh(mailbox)
    first_resume_at = mailbox.resume_at

    def act(who, action, **form):
        client.force_login(who)
        client.post(changelist_url(Mailbox), {"action": action, "_selected_action": [mailbox.pk], "apply": "yes",
                                              **form})
        return fresh(mailbox)

    viewer = make_user("vera", workspace=workspace, role="viewer")
    assert act(viewer, "cancel_auto_resume", reason="no").resume_at == first_resume_at
    operator = make_user("olga", workspace=workspace, role="operator")
    assert act(operator, "postpone_auto_resume", hours=48, reason="Waiting for the list audit").resume_at == \
        first_resume_at + dt.timedelta(hours=48)
    page = client.get(change_url(mailbox)).content.decode()
    assert "paused by the mailbox complaint rule" in page and "resumes automatically at" in page
    assert act(operator, "cancel_auto_resume", reason="Keep it off until the client answers").resume_at is None
    assert "automatic resume cancelled" in client.get(change_url(mailbox)).content.decode()
    assert breakers.run(now=timezone.now() + dt.timedelta(days=30))["resumed"] == []
    assert fresh(mailbox).status == "paused"

    mailbox = act(operator, "resume_before_cooldown", reason="The client confirmed the list")
    assert mailbox.status == "active"
    page = client.get(change_url(mailbox)).content.decode()
    assert "Re-ramp after an automatic pause: day 1 of 7, 250 sends allowed today" in page
    assert "re-ramp day 1 of 7 after an automatic pause allows 250" in page

    [postponed] = audited("mailbox.auto_resume_postponed", mailbox)
    [cancelled] = audited("mailbox.auto_resume_cancelled", mailbox)
    [resumed] = audited("mailbox.resumed", mailbox)
    assert postponed.actor == cancelled.actor == resumed.actor == "user:olga"
    assert postponed.after["reason"] == "Waiting for the list audit"
    assert cancelled.before["resume_at"] and cancelled.after == {"resume_at": None,
                                                                 "reason": "Keep it off until the client answers"}
    assert resumed.after["reason"] == "The client confirmed the list"
    assert Event.objects.filter(type="mailbox.resumed", data__reason="The client confirmed the list").count() == 1


def test_a_manual_pause_is_never_resumed_by_the_cool_down(api, workspace):
    mailbox = mailbox_on(workspace, "mail.acme.com", "ann")
    report(sent(mailbox, 50)[0])
    assert fresh(mailbox).breaker_rule == "mailbox_complaint"

    api.post(f"/api/v1/mailboxes/{mailbox.pk}/pause", {"reason": "Client asked to stop"}, format="json")
    mailbox = fresh(mailbox)
    assert mailbox.breaker_rule == "" and mailbox.resume_at is None
    assert breakers.run(now=timezone.now() + dt.timedelta(days=30))["resumed"] == []
    assert fresh(mailbox).paused_reason == "Client asked to stop"


def _at_once(count, work):
    barrier = threading.Barrier(count)
    errors = []

    def run(i):
        try:
            barrier.wait()
            work(i)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_complaints_pause_once_and_concurrent_jobs_resume_once(workspace):
    # Every scope pauses above 5 %: it takes the 6 concurrent complaints together to pass it.
    Workspace.objects.filter(pk=workspace.pk).update(
        complaint_threshold=Decimal("0.05"), domain_complaint_pause_threshold=Decimal("0.05"),
        workspace_complaint_pause_threshold=Decimal("0.05"))
    mailbox = mailbox_on(workspace, "mail.acme.com", "ann")
    history = sent(mailbox, 100)

    _at_once(6, lambda i: report(history[i]))

    assert fresh(mailbox).status == "paused"
    assert fresh(mailbox).paused_reason.startswith("Complaint rate 6.0% (6 of the last 100 sends)")
    assert len(audited("mailbox.paused", mailbox)) == 1
    assert len(audited("mailbox.health_warned", mailbox)) == 1
    assert Event.objects.filter(type="mailbox.paused").count() == 1

    _at_once(8, lambda i: report(history[10 + i]))
    assert len(audited("mailbox.paused", mailbox)) == 1
    assert not fresh(mailbox.domain).paused and not fresh(workspace).paused

    later = fresh(mailbox).resume_at + dt.timedelta(minutes=1)
    _at_once(4, lambda i: breakers.run(now=later))
    assert fresh(mailbox).status == "active"
    assert len(audited("mailbox.resumed", mailbox)) == 1
    assert Event.objects.filter(type="mailbox.resumed").count() == 1


def test_breaker_settings_are_changed_by_an_audited_action_that_explains_bad_values(workspace, client, make_user):
    client.force_login(make_user("ada", workspace=workspace, role="admin"))
    form = {"mailbox_hard_bounce_warn_threshold": "0.025", "mailbox_complaint_warn_threshold": "0.001",
            "domain_hard_bounce_warn_threshold": "0.05", "domain_hard_bounce_pause_threshold": "0.10",
            "domain_complaint_warn_threshold": "0.004", "domain_complaint_pause_threshold": "0.003",
            "workspace_hard_bounce_warn_threshold": "0.05", "workspace_hard_bounce_pause_threshold": "0.10",
            "workspace_complaint_warn_threshold": "0.001", "workspace_complaint_pause_threshold": "0.003",
            "health_scope_window_days": 7, "breaker_cooldown_hours": 12, "reramp_fraction": "0.25",
            "reramp_days": 10}
    post = {"action": "change_breaker_settings", "_selected_action": [workspace.pk], "apply": "yes"}

    refused = client.post(changelist_url(Workspace), {**post, **form})
    assert "Must not be above the matching pause threshold (0.3%)" in refused.content.decode()
    assert fresh(workspace).breaker_cooldown_hours == 24

    client.post(changelist_url(Workspace), {**post, **form, "domain_complaint_warn_threshold": "0.002"})
    workspace = fresh(workspace)
    assert (workspace.breaker_cooldown_hours, workspace.reramp_fraction, workspace.reramp_days) == \
        (12, Decimal("0.25"), 10)
    [updated] = audited("workspace.updated", workspace)
    assert updated.actor == "user:ada"
    assert updated.after == {"breaker_cooldown_hours": 12, "domain_complaint_warn_threshold": "0.0020",
                             "reramp_days": 10, "reramp_fraction": "0.25"}

    client.force_login(make_user("olga", workspace=workspace, role="operator"))
    client.post(changelist_url(Workspace), {**post, **form, "breaker_cooldown_hours": 1})
    assert fresh(workspace).breaker_cooldown_hours == 12
