"""Canonical events: written in the caller's transaction (`emit`), read as a feed, fanned out after commit."""

from django.db import transaction
from django.utils import timezone

from controlplane.ids import new_id
from controlplane.models import EVENT_TYPES, Event

_after_commit_hooks = []


def on_event(hook):
    """Registers `hook(event_ids)` to run after the emitting transaction commits (e.g. webhooks out)."""
    _after_commit_hooks.append(hook)
    return hook


def emit(*, workspace, type: str, message=None, data=None, occurred_at=None) -> Event:
    if type not in EVENT_TYPES:
        raise ValueError(f"Unknown event type {type!r}")
    event = Event.objects.create(
        id=new_id("evt"), workspace=workspace, message=message, type=type,
        occurred_at=occurred_at or timezone.now(), data=data or {},
    )
    from controlplane import effects, webhooks

    effects.apply(event)  # status, suppression, health: in this transaction
    webhooks.fan_out(event)  # delivery rows now, sent by the "webhooks" queue after commit
    if _after_commit_hooks:
        transaction.on_commit(lambda: [hook([event.pk]) for hook in _after_commit_hooks])
    return event


def emit_many(*, workspace, items, occurred_at=None) -> list:
    """Writes many events in one insert, in order: `items` are (type, message, data). Effects and
    webhook deliveries follow as for `emit`, all in the caller's transaction."""
    unknown = {kind for kind, _, _ in items if kind not in EVENT_TYPES}
    if unknown:
        raise ValueError(f"Unknown event type(s) {sorted(unknown)!r}")
    if not items:
        return []
    when = occurred_at or timezone.now()
    from controlplane import bulk

    return written(bulk.insert(Event, [
        bulk.new(Event, id=new_id("evt"), workspace=workspace, message=message, type=kind, occurred_at=when, data=data or {})
        for kind, message, data in items]))


def written(created) -> list:
    """What follows events written together (by `emit_many`, or by a caller's own statement): their
    effects and webhook deliveries in the caller's transaction, the after-commit hooks after it."""
    from controlplane import effects, webhooks

    for event in created:
        effects.apply(event)
    webhooks.fan_out_many(created)
    if _after_commit_hooks and created:
        ids = [event.pk for event in created]
        transaction.on_commit(lambda: [hook(ids) for hook in _after_commit_hooks])
    return created


def serialize(event: Event, message=None) -> dict:
    """The contract's event shape: {id, type, occurred_at, workspace, message?, data}."""
    message = message if message is not None else event.message
    body = {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "workspace": event.workspace_id,
        "data": event.data,
    }
    if message is not None:
        body["message"] = {"id": message.id, "to": message.to_address, "from": message.from_address,
                           "metadata": message.metadata}
    return body
