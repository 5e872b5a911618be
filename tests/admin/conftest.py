"""Two workspaces, a user of every role, and a set of sending identities in each workspace."""

from types import SimpleNamespace

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from providers import services as provider_services
from suppression import services as suppression_services
from workspaces import roles
from workspaces import services as workspace_services

SECRET = "s3cret-smtp-password"


def make_identities(workspace, domain_name):
    domain = SendingDomain.objects.create(workspace=workspace, name=domain_name)
    provider = provider_services.create_connection(
        workspace=workspace, kind="smtp", name=f"{workspace.slug}-relay",
        settings={"host": "127.0.0.1", "port": 2525, "security": "none"},
        credentials={"username": "relay", "password": SECRET},
    )
    warmup = WarmupProfile.objects.create(workspace=workspace, name=f"{workspace.slug}-ramp", start=5, step=5, max=50)
    mailbox = Mailbox.objects.create(workspace=workspace, domain=domain, provider=provider,
                                     address=f"sales@{domain_name}", daily_cap=20, weekly_cap=80)
    pool = Pool.objects.create(workspace=workspace, name=f"{workspace.slug}-cold", workloads=["cold"])
    pool.mailboxes.add(mailbox)
    suppression, _ = suppression_services.suppress(workspace=workspace, value=f"blocked@{workspace.slug}-prospect.com",
                                                   reason="manual")
    key, _ = workspace_services.create_api_key(workspace=workspace, name=f"{workspace.slug} sequencer")
    return SimpleNamespace(workspace=workspace, domain=domain, provider=provider, warmup=warmup, mailbox=mailbox,
                           pool=pool, suppression=suppression, key=key)


@pytest.fixture
def acme(workspace):
    return make_identities(workspace, "mail.acme.com")


@pytest.fixture
def globex(other_workspace):
    return make_identities(other_workspace, "mail.globex.com")


class People(dict):
    """Users made on first use: one per role in Acme, an owner of Globex, a superuser and a staff user
    without any role."""

    def __init__(self, make_user, workspace, other_workspace):
        super().__init__()
        self.make_user, self.workspace, self.other_workspace = make_user, workspace, other_workspace

    def __missing__(self, who):
        if who in roles.ROLE_NAMES:
            user = self.make_user(who, workspace=self.workspace, role=who)
        elif who == "globex_owner":
            user = self.make_user(who, workspace=self.other_workspace, role="owner")
        elif who == "superuser":
            user = self.make_user("root", superuser=True)
        elif who == "no_role":
            user = self.make_user("drifter")
        else:
            raise KeyError(who)
        self[who] = user
        return user


@pytest.fixture
def users(make_user, workspace, other_workspace):
    return People(make_user, workspace, other_workspace)


@pytest.fixture
def login(client, users):
    def log_in(who):
        client.force_login(users[who] if isinstance(who, str) else who)
        return client

    return log_in


def url(name, *args):
    return reverse(f"admin:{name}", args=args)


def change_url(obj):
    return url(f"{obj._meta.app_label}_{obj._meta.model_name}_change", obj.pk)


def changelist_url(model):
    return url(f"{model._meta.app_label}_{model._meta.model_name}_changelist")


def add_url(model):
    return url(f"{model._meta.app_label}_{model._meta.model_name}_add")


def messages_of(response):
    return [str(m) for m in response.context["messages"]] if response.context else []


def form_errors(response):
    """{field: [messages]} of the admin form on a re-rendered add/change page."""
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}
