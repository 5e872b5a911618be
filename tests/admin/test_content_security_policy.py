"""The admin's Content-Security-Policy: scripts only from this origin, none inline, on every page people open."""

import re

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox, SendingDomain
from tests.admin.conftest import change_url, changelist_url, url

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def directives(response):
    policy = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


def admin_pages(acme):
    return [url("index"), reverse("compliance:index"), changelist_url(Mailbox), change_url(acme.mailbox),
            changelist_url(SendingDomain), change_url(acme.domain), url("mailboxes_mailbox_bulk_add"),
            url("workspaces_workspace_onboarding", acme.workspace.pk), url("controlplane_message_changelist"),
            url("audit_auditevent_changelist")]


def test_every_admin_page_allows_scripts_from_this_origin_only_and_carries_none_inline(login, acme):
    client = login("owner")

    for path in admin_pages(acme):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = directives(response)
        assert policy["script-src"] == ["'self'", "'unsafe-eval'"], path
        assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"], path
        assert policy["frame-ancestors"] == ["'none'"] and policy["form-action"] == ["'self'"], path
        page = response.content.decode()
        assert INLINE_SCRIPT.findall(page) == [], path
        assert EVENT_HANDLER.findall(page) == [], path


def test_the_login_page_has_the_policy_too(client):
    response = client.get(url("login"))

    assert directives(response)["script-src"] == ["'self'", "'unsafe-eval'"]
    assert INLINE_SCRIPT.findall(response.content.decode()) == []


def test_the_api_and_its_docs_are_left_to_themselves(client):
    docs = client.get("/api/v1/docs/")

    assert docs.status_code == 200 and "Content-Security-Policy" not in docs
