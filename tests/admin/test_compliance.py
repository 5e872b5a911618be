"""Recipient evidence, erasure, and the compliance page: what a reviewer, a viewer and an admin can do."""

import csv
import io
import json

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.sessions.models import Session
from django.urls import reverse

from audit.models import AuditEvent
from controlplane.models import Event, Message
from suppression import services as suppression
from tests.admin.conftest import changelist_url, messages_of, url
from tests.admin.test_messages_admin import hand_off, report, send
from workspaces.models import WorkspaceAPIKey

pytestmark = pytest.mark.django_db

ADDRESS = "jane@prospect.com"


def evidence(client, address=ADDRESS, **params):
    return client.get(url("controlplane_message_recipient"), {"address": address, **params})


def text_of(response):
    assert response.status_code == 200
    return response.content.decode()


def erase(client, workspace, address=ADDRESS, confirm=True):
    data = {"address": address, "workspace": workspace.pk}
    if confirm:
        data["confirm"] = "yes"
    return client.post(url("controlplane_message_erase"), data, follow=confirm)


@pytest.fixture
def story(acme):
    """Jane got two messages from Acme: the first was delivered, the second bounced hard (which suppressed her)."""
    first = hand_off(send(acme, ADDRESS, subject="Intro"))
    report(first, "message.delivered", 3)
    second = hand_off(send(acme, ADDRESS, subject="Follow-up"), reply="250 Ok: queued as 9ZZ", provider_id="9ZZ")
    report(second, "message.bounced", 40, bounce_type="hard", reply="550 5.1.1 no such user")
    other = send(acme, "joe@prospect.com")
    return [first, second, other]


# Recipient evidence -----------------------------------------------------------------------------


def test_evidence_shows_every_message_oldest_first_with_its_trail_and_the_suppression(login, story):
    first, second, other = story

    page = text_of(evidence(login("viewer"), "  JANE@prospect.com "))

    assert page.index(f'id="message-{first.id}"') < page.index(f'id="message-{second.id}"')
    assert other.id not in page
    first_block = page[page.index(f'id="message-{first.id}"'):page.index(f'id="message-{second.id}"')]
    assert "Intro" in first_block and "delivered" in first_block
    assert "rotation (round robin) within the pool" in first_block
    assert "sales@mail.acme.com" in first_block and "smtp" in first_block
    assert first_block.index("message.accepted") < first_block.index("message.sent") < first_block.index(
        "message.delivered")
    second_block = page[page.index(f'id="message-{second.id}"'):]
    assert "550 5.1.1 no such user" in second_block and "bounced" in second_block
    assert "<strong>Suppressed</strong>" in page
    assert f"source: message.bounced of {second.id}" in page
    assert "reason hard_bounce" in page


def test_an_address_never_seen_says_so(login, story):
    page = text_of(evidence(login("viewer"), "nobody@prospect.com"))

    assert "No workspace you can see holds any message to <strong>nobody@prospect.com</strong>" in page
    assert "Download this evidence" not in page


def test_a_suppressed_address_without_messages_shows_its_suppression(login, acme):
    page = text_of(evidence(login("viewer"), "blocked@acme-prospect.com"))

    assert "<strong>Suppressed</strong>" in page and "reason manual" in page
    assert "No messages to this address in Acme" in page


def test_a_domain_suppression_covers_the_address(login, acme):
    suppression.suppress(workspace=acme.workspace, value="@prospect.com", reason="dnc", source="client list")

    page = text_of(evidence(login("viewer")))

    assert "matched @prospect.com (domain), reason dnc, source: client list" in page


@pytest.mark.parametrize("typed", ["not-an-address", "@prospect.com"])
def test_the_search_box_wants_one_address(login, acme, typed):
    page = text_of(evidence(login("viewer"), typed))

    assert "errorlist" in page
    assert "Download this evidence" not in page


def test_evidence_never_shows_another_workspaces_messages(login, story, globex):
    theirs = hand_off(send(globex, ADDRESS, subject="Globex pitch"))

    ours_only = text_of(evidence(login("owner")))
    everything = text_of(evidence(login("superuser")))
    theirs_only = text_of(evidence(login("globex_owner")))

    assert story[0].id in ours_only and theirs.id not in ours_only and "Globex pitch" not in ours_only
    assert 'id="workspace-globex"' not in ours_only
    assert story[0].id not in theirs_only and theirs.id in theirs_only
    assert "<strong>Not suppressed</strong>" in theirs_only
    assert story[0].id in everything and theirs.id in everything


def test_evidence_downloads_as_json(login, story, globex):
    first, second, _ = story
    hand_off(send(globex, ADDRESS))

    response = evidence(login("reviewer"), format="json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert "attachment" in response["Content-Disposition"]
    body = json.loads(response.content)
    assert body["address"] == ADDRESS
    assert [ws["workspace"]["slug"] for ws in body["workspaces"]] == ["acme"]
    acme_part = body["workspaces"][0]
    assert acme_part["suppressed"] is True and acme_part["suppression"]["reason"] == "hard_bounce"
    assert [m["id"] for m in acme_part["messages"]] == [first.id, second.id]
    assert [e["type"] for e in acme_part["messages"][0]["events"]] == ["message.accepted", "message.sent",
                                                                      "message.delivered"]
    assert acme_part["messages"][0]["decision"]["mailbox"] == first.mailbox_id


def test_evidence_downloads_as_csv_one_row_per_event(login, story):
    first, second, _ = story

    response = evidence(login("reviewer"), format="csv")

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["message"], r["event_type"]) for r in rows] == [
        (first.id, "message.accepted"), (first.id, "message.sent"), (first.id, "message.delivered"),
        (second.id, "message.accepted"), (second.id, "message.scheduled"), (second.id, "message.sent"),
        (second.id, "message.bounced"),
        (second.id, "suppression.created"),
    ]
    assert {r["workspace"] for r in rows} == {"acme"}
    assert {r["suppression_reason"] for r in rows} == {"hard_bounce"}
    assert rows[0]["provider"] == "smtp" and rows[0]["decision_reason"] == "rotation:round_robin"
    assert json.loads(rows[6]["event_data"])["bounce_type"] == "hard"


# Erasure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "owner"])
def test_an_admin_erases_an_address_after_confirming(login, story, users, who):
    first, second, other = story
    client = login(who)

    offered = text_of(evidence(client))
    confirmation = text_of(erase(client, story[0].workspace, confirm=False))
    untouched = Message.objects.get(pk=first.pk).to_address
    done = erase(client, story[0].workspace)

    assert "Erase this address" in offered
    assert "2 messages lose the address" in confirmation and "Yes, erase this address" in confirmation
    assert untouched == ADDRESS
    assert "Erased the address from Acme: 2 messages" in " ".join(messages_of(done))
    for message in Message.objects.filter(pk__in=[first.pk, second.pk]):
        assert message.to_address == "" and message.subject == "" and message.text == ""
    assert Message.objects.get(pk=other.pk).to_address == "joe@prospect.com"
    assert all(e.data == {"erased": True} for e in Event.objects.filter(message=first))
    assert suppression.is_suppressed(first.workspace, ADDRESS)
    record = AuditEvent.objects.get(action="recipient.erased")
    assert record.actor_label == users[who].username and ADDRESS not in json.dumps(record.after)
    after = text_of(evidence(client))
    assert first.id not in after and "matched (erased)" in after


@pytest.mark.parametrize("who", ["viewer", "operator", "reviewer"])
def test_only_admins_may_erase(login, story, who):
    client = login(who)

    page = text_of(evidence(client))
    asking = erase(client, story[0].workspace, confirm=False)
    erasing = client.post(url("controlplane_message_erase"), {"address": ADDRESS, "workspace": story[0].workspace_id,
                                                              "confirm": "yes"})

    assert "Erase this address" not in page
    assert asking.status_code == erasing.status_code == 403
    assert Message.objects.get(pk=story[0].pk).to_address == ADDRESS
    assert not AuditEvent.objects.filter(action="recipient.erased").exists()


def test_an_admin_cannot_erase_in_another_workspace(login, acme, globex):
    theirs = hand_off(send(globex, ADDRESS))

    response = login("admin").post(url("controlplane_message_erase"),
                                   {"address": ADDRESS, "workspace": globex.workspace.pk, "confirm": "yes"})

    assert response.status_code == 404
    assert Message.objects.get(pk=theirs.pk).to_address == ADDRESS


def test_erasure_is_post_only(login, story):
    response = login("admin").get(url("controlplane_message_erase"),
                                  {"address": ADDRESS, "workspace": story[0].workspace_id, "confirm": "yes"})

    assert response.status_code == 405
    assert Message.objects.get(pk=story[0].pk).to_address == ADDRESS


# The compliance page ----------------------------------------------------------------------------


def test_a_reviewer_lands_on_the_compliance_page_after_logging_in(client, users, acme):
    reviewer = users["reviewer"]

    response = client.post(reverse("admin:login"), {"username": reviewer.username, "password": "pw-123456789",
                                                    "next": reverse("admin:index")}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("compliance:index")
    page = text_of(response)
    assert "Recipient evidence" in page and "Audit log" in page and "Compliance pack" in page


@pytest.mark.parametrize("who", ["operator", "viewer", "superuser"])
def test_other_users_keep_the_usual_index_with_a_way_to_the_compliance_page(login, acme, who):
    page = text_of(login(who).get(reverse("admin:index")))

    assert 'id="compliance-module"' in page
    assert reverse("compliance:index") in page
    assert reverse("admin:controlplane_message_changelist") in page


def test_a_reviewer_who_also_operates_another_workspace_keeps_the_usual_index(login, users, acme, globex):
    from workspaces import roles

    reviewer = users["reviewer"]
    roles.grant_role(user=reviewer, workspace=globex.workspace, role="operator")

    response = login(reviewer).get(reverse("admin:index"))

    assert response.status_code == 200 and 'id="compliance-module"' in response.content.decode()


def test_the_compliance_page_shows_recent_audit_of_the_users_workspaces_only(login, story, globex):
    globex_message = send(globex, "someone@globex-prospect.com")

    page = text_of(login("reviewer").get(reverse("compliance:index")))

    assert "message.accepted" in page and "provider.created" in page
    assert "Acme" in page and "Globex" not in page
    assert globex_message.id not in page
    assert reverse("admin:audit_auditevent_export") in page
    assert reverse("admin:audit_auditevent_changelist") in page
    assert f'action="{reverse("admin:controlplane_message_recipient")}"' in page
    for name in ("data-map", "subprocessors", "roles", "audit-integrity", "runbooks"):
        assert reverse("compliance:doc", args=(name,)) in page
    assert "Which fields hold personal data" in page


def test_a_viewer_sees_the_compliance_page_without_the_audit_log(login, story):
    page = text_of(login("viewer").get(reverse("compliance:index")))

    assert "Your role does not include reading the audit log" in page
    assert reverse("admin:audit_auditevent_export") not in page
    assert "Compliance pack" in page


def test_compliance_documents_open_and_unknown_ones_do_not(login, acme):
    client = login("reviewer")

    roles_page = text_of(client.get(reverse("compliance:doc", args=("roles",))))
    missing = client.get(reverse("compliance:doc", args=("secrets",)))

    assert "A staff user sees only the workspaces where they hold a role" in roles_page
    assert missing.status_code == 404


def test_the_compliance_page_is_closed_to_staff_without_a_role_and_to_strangers(client, login, acme):
    anonymous = client.get(reverse("compliance:index"))
    drifter = login("no_role").get(reverse("compliance:index"))

    assert anonymous.status_code == 302 and reverse("admin:login") in anonymous.url
    assert drifter.status_code == 403


# A reviewer reads everything and changes nothing ------------------------------------------------


def test_a_reviewer_opens_every_compliance_page_and_export(login, story, acme):
    client = login("reviewer")
    audit_event = AuditEvent.objects.filter(workspace=acme.workspace).first()
    event = Event.objects.filter(workspace=acme.workspace).first()

    pages = [
        reverse("compliance:index"),
        *[reverse("compliance:doc", args=(doc,)) for doc in ("README", "data-map", "subprocessors", "roles",
                                                             "audit-integrity", "runbooks")],
        url("controlplane_message_recipient"),
        changelist_url(AuditEvent),
        url("audit_auditevent_change", quote(audit_event.pk)),
        url("audit_auditevent_export"),
        changelist_url(Message),
        url("controlplane_message_change", quote(story[0].pk)),
        changelist_url(Event),
        url("controlplane_event_change", event.pk),
    ]
    for page in pages:
        assert client.get(page).status_code == 200, page
    assert evidence(client, format="json").status_code == 200
    assert evidence(client, format="csv").status_code == 200

    export = client.post(url("audit_auditevent_export"), {"workspace": acme.workspace.pk, "format": "csv"})

    assert export.status_code == 200
    assert export["X-Audit-Digest"].startswith("sha256=")
    assert b"message.accepted" in b"".join(export.streaming_content)


def database_state():
    """Every stored row (sessions aside), to compare before and after."""
    state = {}
    for model in apps.get_models():
        if model is Session or not model._meta.managed or model._meta.proxy:
            continue
        state[model._meta.label] = sorted(map(repr, model._default_manager.values_list()))
    return state


STANDARD_VIEWS = {"changelist", "add", "change", "delete", "history"}
READ_ONLY_VIEWS = {"audit_auditevent_export", "controlplane_message_recipient"}


def object_in(model, workspace, users):
    if not model._meta.managed:
        return None
    if model is WorkspaceAPIKey:
        return model.objects.filter(workspace=workspace).first()
    lookup = getattr(model, "workspace_lookup", None)
    if lookup is not None:
        return model._default_manager.filter(**{lookup: workspace.pk}).first()
    if model is type(users["reviewer"]):
        return users["reviewer"]
    return model._default_manager.first()


def key_of(obj):
    return quote(obj.prefix if isinstance(obj, WorkspaceAPIKey) else obj.pk)


def write_attempts(model_admin, obj, reviewer, workspace):
    """(what, url, data) for every way this admin can change something: add, change, delete, actions, and
    its own pages."""
    opts = model_admin.model._meta
    name = f"{opts.app_label}_{opts.model_name}"
    everything = {"workspace": workspace.pk, "name": "x", "value": "x@prospect.com", "reason": "x", "apply": "yes",
                  "post": "yes", "confirm": "yes", "address": ADDRESS, "operation": "grant",
                  "grant-username": reviewer.username, "grant-role": "owner", "status": "cancelled"}
    attempts = [("add", url(f"{name}_add"), everything)]
    if obj is not None:
        attempts += [("change", url(f"{name}_change", key_of(obj)), everything),
                     ("delete", url(f"{name}_delete", key_of(obj)), {"post": "yes"})]
        actions = list(model_admin.actions or []) + ["delete_selected"]
        attempts += [(f"action {action}", changelist_url(model_admin.model),
                      {**everything, "action": action, "_selected_action": [key_of(obj)], "index": 0})
                     for action in actions]
    for pattern in model_admin.get_urls():
        custom = pattern.name or ""
        if not custom.startswith(name) or custom.removeprefix(f"{name}_") in STANDARD_VIEWS:
            continue
        if custom in READ_ONLY_VIEWS:
            continue
        needs_object = bool(pattern.pattern.converters)
        if needs_object and obj is None:
            continue
        attempts.append((custom, url(custom, *([key_of(obj)] if needs_object else [])), everything))
    return attempts


def test_a_reviewer_changes_nothing_anywhere_in_the_admin(login, story, users, acme):
    client = login("reviewer")
    reviewer = users["reviewer"]
    before = database_state()

    tried = []
    for model, model_admin in admin.site._registry.items():
        obj = object_in(model, acme.workspace, users)
        for what, target, data in write_attempts(model_admin, obj, reviewer, acme.workspace):
            response = client.post(target, data)
            tried.append(what)
            if what.startswith("action"):
                # An action the user is not offered is ignored: the list comes back, or "No action selected".
                assert response.status_code in (200, 302, 403), (model.__name__, what, response.status_code)
            else:
                assert response.status_code in (403, 405), (model.__name__, what, response.status_code)
            if what in ("add", "delete"):
                assert client.get(target).status_code == 403, (model.__name__, what)

    assert database_state() == before
    assert {"action cancel_messages", "action pause_mailboxes", "action pause_workspaces",
            "controlplane_message_cancel", "controlplane_message_erase", "workspaces_workspace_members",
            "suppression_suppression_import"} <= set(tried)


def test_a_reviewer_is_offered_no_action_anywhere(login, story, acme):
    client = login("reviewer")

    for model, model_admin in admin.site._registry.items():
        response = client.get(changelist_url(model))
        if response.status_code == 403:
            continue
        assert response.status_code == 200
        assert 'name="action"' not in response.content.decode(), model.__name__
