"""One-click unsubscribe (RFC 8058): `GET /u/{token}` confirms, `POST /u/{token}` suppresses. No login."""

from django.core import signing
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from audit.context import Actor, acting_as
from controlplane import events, mime
from controlplane.models import Message
from controlplane.security import UNSUBSCRIBE_POLICY, content_security_policy
from suppression import services


METHOD_LABELS = {"one_click_post": "RFC 8058 one-click POST", "confirmation_page": "confirmation page",
                 "post": "POST without List-Unsubscribe=One-Click"}


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
                            one_click=request.POST.get("List-Unsubscribe") == "One-Click",
                            from_page=request.POST.get("from") == "confirmation_page")
        return render(request, "unsubscribe/done.html", {"workspace": message.workspace})
    if request.method != "GET":
        return HttpResponse(status=405)
    already = message.to_address and services.is_suppressed(message.workspace, message.to_address)
    return render(request, "unsubscribe/confirm.html",
                  {"workspace": message.workspace, "already": already, "address": message.to_address})


def unsubscribe_message(*, message, ip=None, user_agent="", one_click=True, from_page=False):
    """Suppresses the message's recipient in its workspace, with the evidence of the request: when, from
    which IP and user agent, by which method, for which message (on the entry and in the event)."""
    if not message.to_address:
        return None
    method = "confirmation_page" if from_page else ("one_click_post" if one_click else "post")
    evidence = {"method": method, "at": timezone.now().isoformat().replace("+00:00", "Z"), "ip": ip,
                "user_agent": user_agent[:300], "message": message.id}
    with acting_as(Actor("system", "", "one-click unsubscribe"), ip=ip), transaction.atomic():
        entry, created = services.suppress(
            workspace=message.workspace, value=message.to_address, reason="unsubscribe",
            source=f"one-click unsubscribe of {message.id}",
            note=f"{METHOD_LABELS[method]}; ip={ip or '?'}; user-agent={user_agent[:200]}",
            evidence=evidence,
        )
        event = events.emit(workspace=message.workspace, type="message.unsubscribed", message=message,
                            data={"ip": ip, "user_agent": user_agent[:300], "one_click": one_click,
                                  "method": method, "at": evidence["at"], "suppression": entry.pk})
        if created:
            services.link_source_event(entry, event.id)
            events.emit(workspace=message.workspace, type="suppression.created", message=message,
                        data={"suppression": entry.pk, "value": entry.value, "reason": entry.reason,
                              "source": entry.source})
    return entry
