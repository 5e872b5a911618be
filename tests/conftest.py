"""Real-server fixtures: PostgreSQL (pytest-django), Redis, burst RQ workers, API clients, users of every role."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from audit.context import acting_as, Actor
from workspaces import roles, services as workspace_services


@pytest.fixture(autouse=True)
def _system_actor():
    with acting_as(Actor("system", "", "tests")):
        yield


@pytest.fixture
def workspace(db):
    return workspace_services.create_workspace(slug="acme", name="Acme", timezone="Europe/Paris",
                                               postal_address="1 Rue de la Paix, Paris")


@pytest.fixture
def other_workspace(db):
    return workspace_services.create_workspace(slug="globex", name="Globex", timezone="America/New_York")


def api_client_for(workspace, role="admin"):
    _, raw = workspace_services.create_api_key(workspace=workspace, name=f"{role} key", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def api(workspace):
    return api_client_for(workspace, "admin")


@pytest.fixture
def other_api(other_workspace):
    return api_client_for(other_workspace, "admin")


@pytest.fixture
def make_api():
    return api_client_for


@pytest.fixture
def make_user(db):
    def make(username, *, workspace=None, role=None, superuser=False):
        user = get_user_model().objects.create_user(username=username, password="pw-123456789",
                                                    is_staff=True, is_superuser=superuser)
        if workspace is not None and role is not None:
            roles.grant_role(user=user, workspace=workspace, role=role)
        return user

    return make


@pytest.fixture
def redis_conn():
    import django_rq

    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield conn
    conn.flushdb()
