"""What delivery events do, in one place: message status, health (circuit breakers), suppression.

`events.emit` calls `apply` in the emitting transaction, so an event and its effects commit together.
"""

from controlplane.models import Message

EFFECT_TYPES = {"message.delivered", "message.bounced", "message.complained", "message.unsubscribed"}

# A later report may only move a message forward: sent → delivered → bounced → complained.
STATUS_AFTER = {
    "message.delivered": ("delivered", {"sent"}),
    "message.bounced": ("bounced", {"sent", "delivered"}),
    "message.complained": ("complained", {"sent", "delivered", "bounced"}),
}
SUPPRESSION_REASON = {"message.complained": "complaint", "message.unsubscribed": "unsubscribe"}


def apply(event):
    if event.type not in EFFECT_TYPES or event.message_id is None:
        return
    message = event.message
    if event.type in STATUS_AFTER:
        status, allowed_from = STATUS_AFTER[event.type]
        Message.objects.filter(pk=message.pk, status__in=allowed_from).update(status=status)
    reason = SUPPRESSION_REASON.get(event.type)
    if event.type == "message.bounced" and (event.data or {}).get("bounce_type") == "hard":
        reason = "hard_bounce"
    if reason in ("hard_bounce", "complaint") and message.mailbox_id:
        from mailboxes.services import breakers

        # Before suppressing: the breakers lock workspace → domain → mailbox before any audit write, the
        # order intake takes (mailbox, then audit chain), so the two never wait on each other in a circle.
        breakers.check(mailbox_id=message.mailbox_id)
    if reason and message.to_address:
        _suppress(event, message, reason)


def _suppress(event, message, reason):
    from controlplane import events
    from suppression import services as suppression

    try:
        entry, created = suppression.suppress(
            workspace=message.workspace, value=message.to_address, reason=reason,
            source=f"{event.type} of {message.id} ({(event.data or {}).get('source', 'provider')})"[:300],
            source_event=event.id,
        )
    except suppression.InvalidValue:
        return
    if created:
        events.emit(workspace=message.workspace, type="suppression.created", message=message,
                    data={"suppression": entry.pk, "value": entry.value, "reason": entry.reason,
                          "source": entry.source})
