"""Evidence for one recipient: what happened (`history`), everything held (`access_export`), and erasure."""

from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from audit import services as audit
from controlplane import events
from controlplane.models import Event, IdempotencyRecord, Message
from suppression import services as suppression
from suppression.models import Suppression

ERASED = ""


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def normalise(address: str) -> str:
    value = suppression.normalise(address)
    if value.startswith("@"):
        raise suppression.InvalidValue("Give one address, not a domain.")
    return value


def suppression_state(workspace, address):
    entry = suppression.find(workspace, address)
    if entry is None:
        return None
    return {"id": entry.pk, "matched": entry.value or "(erased)", "scope": "domain" if entry.is_domain else "address",
            "reason": entry.reason, "source": entry.source, "note": entry.note, "created_by": entry.created_by,
            "created_at": _iso(entry.created_at), "evidence": entry.evidence or None,
            "entry": suppression.describe(entry)}


def messages_to(workspace, address):
    return (Message.objects.for_workspace(workspace).filter(to_address=address)
            .select_related("mailbox__provider", "mailbox__domain").prefetch_related("events").order_by("id"))


def history(workspace, address, *, include_content=False) -> dict:
    """Everything the workspace holds on `address`, oldest first."""
    address = normalise(address)
    state = suppression_state(workspace, address)
    rows = []
    for message in messages_to(workspace, address):
        row = {
            "id": message.id, "status": message.status, "from": message.from_address, "mailbox": message.mailbox_id,
            "provider": message.mailbox.provider.kind if message.mailbox else None,
            "workload": message.workload, "subject": message.subject, "created_at": _iso(message.created_at),
            "scheduled_at": _iso(message.scheduled_at), "sent_at": _iso(message.sent_at),
            "decision": message.decision, "provider_response": message.provider_response,
            "events": [events.serialize(e, message=message) for e in sorted(message.events.all(), key=lambda e: e.seq)],
        }
        if include_content:
            row.update({"text": message.text, "html": message.html, "headers": message.headers,
                        "metadata": message.metadata, "thread_key": message.thread_key})
        rows.append(row)
    return {"address": address, "suppressed": state is not None, "suppression": state, "messages": rows}


def access_export(workspace, address) -> dict:
    """A data-subject access export: the history with message content."""
    data = history(workspace, address, include_content=True)
    with transaction.atomic():
        audit.record(workspace=workspace, action="recipient.access_exported", object_type="recipient",
                     object_repr=audit.pseudonym(data["address"]), after={"messages": len(data["messages"])})
    return data


@transaction.atomic
def erase(*, workspace, address) -> dict:
    """Removes the address and message content from messages, events and stored replies; keeps a
    hash-only suppression so the address is never contacted again; audits the erasure."""
    address = normalise(address)
    digest = suppression.value_hash(address)
    messages = list(Message.objects.for_workspace(workspace).filter(to_address=address).values_list("pk", flat=True))
    Message.objects.filter(pk__in=messages).update(
        to_address=ERASED, subject="", text="", html="", headers={}, metadata={}, thread_key="", provider_response="")
    erased_events = Event.objects.filter(message_id__in=messages).update(data={"erased": True})
    entry = Suppression.objects.filter(workspace=workspace, value_hash=digest).first()
    if entry is None:
        entry, _ = suppression.suppress(workspace=workspace, value=address, reason="manual",
                                        source="data-subject erasure")
        previously_seen = False
    else:
        previously_seen = True
    Suppression.objects.filter(pk=entry.pk).update(value="", note="", evidence={})
    Event.objects.filter(workspace=workspace, type="suppression.created", data__suppression=entry.pk).update(
        data={"suppression": entry.pk, "erased": True})
    replies = (IdempotencyRecord.objects.filter(workspace=workspace)
               .annotate(body_text=Cast("response_body", TextField())).filter(body_text__icontains=address))
    erased_replies = IdempotencyRecord.objects.filter(pk__in=list(replies.values_list("pk", flat=True))).delete()[0]
    result = {"address_hash": digest, "messages": len(messages), "events": erased_events,
              "idempotency_records": erased_replies, "suppression": entry.pk,
              "previously_known": bool(messages) or previously_seen}
    audit.record(workspace=workspace, action="recipient.erased", object_type="recipient",
                 object_repr=f"sha256:{digest[:16]}", after=result)
    return result
