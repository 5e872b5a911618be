"""One-click unsubscribe (RFC 8058): `GET /u/{token}` confirms, `POST /u/{token}` suppresses. No login."""

from django.core import signing
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from audit.context import Actor, acting_as
from controlplane import events, mime
from controlplane.models import Message
from controlplane.security import UNSUBSCRIBE_POLICY, content_security_policy
from suppression import services


def _message(token):
    try:
        message_id = mime.message_id_from_token(token)
    except signing.BadSignature:
        return None
    return Message.objects.select_related("workspace").filter(pk=message_id).first()


@csrf_exempt
@content_security_policy(UNSUBSCRIBE_POLICY)
def unsubscribe(request, token):
    message = _message(token)
    if message is None:
        return render(request, "unsubscribe/invalid.html", status=404)
    if request.method == "POST":
        unsubscribe_message(message=message, ip=request.META.get("REMOTE_ADDR"),
                            user_agent=request.META.get("HTTP_USER_AGENT", ""),
                            one_click=request.POST.get("List-Unsubscribe") == "One-Click")
        return render(request, "unsubscribe/done.html", {"workspace": message.workspace})
    if request.method != "GET":
        return HttpResponse(status=405)
    already = message.to_address and services.is_suppressed(message.workspace, message.to_address)
    return render(request, "unsubscribe/confirm.html",
                  {"workspace": message.workspace, "already": already, "address": message.to_address})


def unsubscribe_message(*, message, ip=None, user_agent="", one_click=True):
    """Suppresses the message's recipient in its workspace, with the evidence of the request."""
    if not message.to_address:
        return None
    with acting_as(Actor("system", "", "one-click unsubscribe"), ip=ip), transaction.atomic():
        entry, created = services.suppress(
            workspace=message.workspace, value=message.to_address, reason="unsubscribe",
            source=f"one-click unsubscribe of {message.id}",
            note=f"{'RFC 8058 one-click POST' if one_click else 'confirmation page'}; ip={ip or '?'}; "
                 f"user-agent={user_agent[:200]}",
        )
        events.emit(workspace=message.workspace, type="message.unsubscribed", message=message,
                    data={"ip": ip, "user_agent": user_agent[:300], "one_click": one_click})
        if created:
            events.emit(workspace=message.workspace, type="suppression.created", message=message,
                        data={"suppression": entry.pk, "value": entry.value, "reason": entry.reason,
                              "source": entry.source})
    return entry
