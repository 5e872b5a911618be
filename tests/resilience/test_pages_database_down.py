"""The pages outside the API while PostgreSQL is down: the admin, the unsubscribe pages and the provider
callbacks answer 503 with Retry-After (an HTML page for people, the contract's JSON error for callbacks),
never a 500, and work again as soon as the database is back.

The control plane runs as in production: gunicorn on a PostgreSQL of its own that the test stops."""

import os
import re

import pytest
import requests

from tests.resilience.test_database_restart import deployment, manage  # noqa: F401  (gunicorn on its own PostgreSQL)

PASSWORD = "pw-123456789"
SEED = f"""
from django.contrib.auth import get_user_model
from audit.context import Actor, acting_as
from controlplane import mime
from providers.services import create_connection
from workspaces import services

with acting_as(Actor("system", "", "resilience test")):
    workspace = services.create_workspace(slug="pages", name="Pages")
    hooks = create_connection(workspace=workspace, kind="mailgun", name="mailgun", settings={{"domain": "acme.com"}},
                              credentials={{"api_key": "key-1", "webhook_signing_key": "signing-key-1"}})
get_user_model().objects.create_superuser("root", "root@acme.com", "{PASSWORD}")
print(hooks.pk, mime.unsubscribe_token("msg_00000000000000000000000000"))
"""


@pytest.fixture(scope="module")
def site(deployment):  # noqa: F811
    """The deployment, with a superuser, a Mailgun connection and an unsubscribe link."""
    database = deployment["database"]
    env = {**os.environ, "DATABASE_URL": database.url(), "DEBUG": "false", "LOG_LEVEL": "WARNING"}
    env.pop("PYTEST_XDIST_WORKER", None)
    provider_id, token = manage(env, "shell", "-c", SEED).stdout.strip().splitlines()[-1].split()
    return {"url": deployment["url"], "database": database, "provider": provider_id, "token": token}


def sign_in_form(session, base):
    page = session.get(f"{base}/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return {"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/"}


def test_pages_answer_503_while_the_database_is_down(site):
    base, database = site["url"], site["database"]
    unsubscribe = f"{base}/u/{site['token']}"
    hook = f"{base}/hooks/mailgun/{site['provider']}/"
    event = {"signature": {"timestamp": "1", "token": "t", "signature": "0" * 64},
             "event-data": {"event": "delivered", "recipient": "jane@example.com"}}
    signed_in = requests.Session()
    response = signed_in.post(f"{base}/login/", data=sign_in_form(signed_in, base), allow_redirects=False)
    assert response.status_code == 302
    assert signed_in.get(f"{base}/").status_code == 200
    newcomer = requests.Session()
    form = sign_in_form(newcomer, base)

    database.stop()
    try:
        pages = {
            "an admin page": signed_in.get(f"{base}/"),
            "an admin list": signed_in.get(f"{base}/suppression/suppression/"),
            "signing in": newcomer.post(f"{base}/login/", data=form, allow_redirects=False),
            "the unsubscribe page": requests.get(unsubscribe),
            "one-click unsubscribe": requests.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}),
        }
        callback = requests.post(hook, json=event)
    finally:
        database.start()

    for name, response in pages.items():
        assert response.status_code == 503, (name, response.status_code, response.text[:500])
        assert response.headers["Content-Type"].startswith("text/html"), name
        assert response.headers["Retry-After"].isdigit(), name
        assert "Temporarily unavailable" in response.text and "try again" in response.text, name
    assert callback.status_code == 503 and callback.headers["Retry-After"].isdigit()
    assert callback.json()["error"]["code"] == "service_unavailable" and callback.json()["error"]["message"]

    # Back as soon as the database is: the same requests get their usual answers.
    assert signed_in.get(f"{base}/").status_code == 200
    assert requests.get(unsubscribe).status_code == 404  # that message does not exist: the usual page says so
    assert requests.post(hook, json=event).json()["error"]["code"] == "invalid_signature"
    assert newcomer.post(f"{base}/login/", data=form, allow_redirects=False).status_code == 302
