"""Mailbox health (contract §4.6): hard-bounce and complaint rates over a mailbox's recent sends.

The window is the mailbox's last `HEALTH_WINDOW_SENDS` handed-off messages (never fewer than the
workspace's `health_min_sends`). Rates are judged only once the window holds at least
`health_min_sends` sends; a rate that passes (is above) the workspace threshold pauses the mailbox.
"""

from decimal import Decimal

from django.conf import settings

from mailboxes.models import Mailbox

HANDED_OFF = ("sent", "delivered", "bounced", "complained")


def window_size(workspace) -> int:
    return max(int(getattr(settings, "HEALTH_WINDOW_SENDS", 200)), workspace.health_min_sends)


def rates(mailbox: Mailbox) -> dict:
    """{sends, hard_bounces, complaints, hard_bounce_rate, complaint_rate, window} over the recent sends."""
    from controlplane.models import Event, Message

    workspace = mailbox.workspace
    size = window_size(workspace)
    recent = list(Message.objects.filter(mailbox=mailbox, sent_at__isnull=False, status__in=HANDED_OFF)
                  .order_by("-sent_at", "-id").values_list("pk", flat=True)[:size])
    sends = len(recent)
    hard = complaints = 0
    if recent:
        bounced = Event.objects.filter(message_id__in=recent, type="message.bounced", data__bounce_type="hard")
        hard = bounced.values("message_id").distinct().count()
        complaints = (Event.objects.filter(message_id__in=recent, type="message.complained")
                      .values("message_id").distinct().count())
    return {
        "window": size,
        "sends": sends,
        "hard_bounces": hard,
        "complaints": complaints,
        "hard_bounce_rate": (Decimal(hard) / sends) if sends else Decimal(0),
        "complaint_rate": (Decimal(complaints) / sends) if sends else Decimal(0),
    }


def _percent(value) -> str:
    return f"{(Decimal(value) * 100).quantize(Decimal('0.1'))}%"


def verdict(mailbox: Mailbox, figures: dict | None = None) -> str:
    """The reason to pause this mailbox, or "" when its rates are within the thresholds."""
    workspace = mailbox.workspace
    figures = figures or rates(mailbox)
    if figures["sends"] < workspace.health_min_sends:
        return ""
    if figures["hard_bounce_rate"] > workspace.hard_bounce_threshold:
        return (f"Hard-bounce rate {_percent(figures['hard_bounce_rate'])} ({figures['hard_bounces']} of the last "
                f"{figures['sends']} sends) passes the workspace threshold of "
                f"{_percent(workspace.hard_bounce_threshold)}.")
    if figures["complaint_rate"] > workspace.complaint_threshold:
        return (f"Complaint rate {_percent(figures['complaint_rate'])} ({figures['complaints']} of the last "
                f"{figures['sends']} sends) passes the workspace threshold of "
                f"{_percent(workspace.complaint_threshold)}.")
    return ""


def check_mailbox(*, mailbox_id) -> Mailbox | None:
    """Pauses the mailbox (audited, with a `mailbox.paused` event) if its rates pass the thresholds."""
    from mailboxes.services.identities import pause_mailbox

    mailbox = Mailbox.objects.select_related("workspace").filter(pk=mailbox_id).first()
    if mailbox is None or mailbox.status != "active":
        return None
    reason = verdict(mailbox)
    if not reason:
        return None
    return pause_mailbox(mailbox=mailbox, reason=reason)
