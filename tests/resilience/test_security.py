"""Security checks: the deploy check is clean with production settings, the browser pages carry security
headers and a CSP, API keys are stored only hashed, and no secret reaches the logs during a full send."""

import logging
import os
import re
import secrets
import subprocess
import sys

import django_rq
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient
from rq import SimpleWorker
from standardwebhooks.webhooks import Webhook

from controlplane import mime
from controlplane.security import ADMIN_POLICY, UNSUBSCRIBE_POLICY
from scripts import servers
from tests.api.helpers import create_identities
from tests.providers.httpfake import HttpFake
from tests.smtpserver import RecordingHandler
from workspaces.services import create_api_key

FERNET_KEY = "W0mXl4u2cQ8cQf7nOZ8HhQ2yqk0XcBv1k3m6cS8w3aE="


def deploy_check(**env):
    production = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.resilience.deploy_settings", "DEBUG": "false",
                  "SECRET_KEY": secrets.token_urlsafe(50), "CREDENTIALS_KEYS": FERNET_KEY,
                  "ALLOWED_HOSTS": "controlplane.example.com", "PUBLIC_BASE_URL": "https://controlplane.example.com",
                  "SECURE_HSTS_PRELOAD": "true", **env}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          env=production, cwd=django_settings.BASE_DIR, capture_output=True, text=True)


def test_the_deploy_check_is_clean_with_production_settings():
    result = deploy_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_refuses_the_example_secret_key_and_plain_http():
    result = deploy_check(SECRET_KEY="change-me", PUBLIC_BASE_URL="http://controlplane.example.com")
    assert result.returncode != 0
    for check in ("security.W009", "security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, check


# --- Browser pages ------------------------------------------------------------------------------

BASELINE_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "Cross-Origin-Opener-Policy": "same-origin"}
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=", re.I)


def assert_hardened(response):
    for name, value in BASELINE_HEADERS.items():
        assert response.get(name) == value, (name, response.get(name))


@pytest.fixture
def with_csp_middleware(settings):
    settings.MIDDLEWARE = [*django_settings.MIDDLEWARE[:1], "controlplane.security.ContentSecurityPolicyMiddleware",
                           *django_settings.MIDDLEWARE[1:]]


@pytest.mark.django_db
def test_the_admin_login_page_carries_security_headers_and_a_policy_it_can_live_with(client, with_csp_middleware):
    response = client.get("/login/")
    assert response.status_code == 200
    assert_hardened(response)
    assert response["Content-Security-Policy"] == ADMIN_POLICY
    page = response.content.decode()
    assert not INLINE_SCRIPT.search(page), "an inline script would be blocked by the policy"
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page), "everything loads from this origin"


@pytest.mark.django_db(transaction=True)
def test_the_unsubscribe_pages_carry_security_headers_and_a_strict_policy(api, client, sending_setup):
    sent = api.post("/api/v1/messages", {"to": "lead@example.com", "subject": "Hi", "text": "Hello"}, format="json")
    url = f"/u/{mime.unsubscribe_token(sent.json()['id'])}"
    pages = [client.get(url), client.post(url, {"List-Unsubscribe": "One-Click"}), client.get(url),
             client.get("/u/forged-token")]
    assert [p.status_code for p in pages] == [200, 200, 200, 404]
    for page in pages:
        assert_hardened(page)
        assert page["Content-Security-Policy"] == UNSUBSCRIBE_POLICY
        html = page.content.decode()
        assert "<script" not in html.lower() and not re.search(r'(?:src|href)="', html)
    assert api.get("/api/v1/suppressions/check", {"address": "lead@example.com"}).json()["suppressed"] is True


# --- Secrets at rest -----------------------------------------------------------------------------

def columns_holding(needle):
    """(table, column) of every text, JSON or binary column that contains `needle` in some row."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name, column_name FROM information_schema.columns "
                       "WHERE table_schema = current_schema() AND data_type IN "
                       "('text', 'character varying', 'character', 'json', 'jsonb', 'bytea')")
        columns = cursor.fetchall()
        found = []
        for table, column in columns:
            cursor.execute(f'SELECT 1 FROM "{table}" WHERE "{column}"::text LIKE %s LIMIT 1', [f"%{needle}%"])
            if cursor.fetchone():
                found.append((table, column))
    return found


@pytest.mark.django_db
def test_api_keys_and_provider_secrets_are_never_stored_in_the_clear(workspace, capsys):
    call_command("createapikey", workspace.slug, "ci", "--role", "admin")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    prefix, _, secret_part = raw.partition(".")
    assert prefix and len(secret_part) >= 20
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    ids = create_identities(client)  # the key works, and stores a provider with an SMTP password
    password = "hunter2-very-secret"
    assert client.get(f"/api/v1/providers/{ids['provider']}").status_code == 200

    assert columns_holding(secret_part) == [], "the raw API key is stored somewhere"
    assert columns_holding(raw) == []
    assert columns_holding(password) == [], "the SMTP password is stored in the clear"
    assert columns_holding(prefix), "the key's public prefix is kept to find it"


# --- Secrets in logs -----------------------------------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "relay-user", "s3cret-Relay-Passw0rd"


@pytest.fixture
def auth_smtp_sink():
    """An SMTP server that insists on the right login before it takes mail."""
    handler = RecordingHandler()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append(auth_data.login)
        return AuthResult(success=auth_data.login == SMTP_USER.encode()
                          and auth_data.password == SMTP_PASSWORD.encode())

    controller = Controller(handler, hostname="127.0.0.1", port=servers.free_port(), authenticator=authenticator,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    controller.logins = logins
    controller.handler_ = handler
    yield controller
    controller.stop()
    from providers import smtp

    smtp.close_idle(0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback only
def test_no_secret_reaches_the_logs_during_a_full_send(workspace, auth_smtp_sink, redis_conn, settings,
                                                       caplog):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    settings.DEBUG = True  # the loopback receiver speaks plain http; DEBUG also logs every SQL statement
    receiver = HttpFake().start()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")  # Django's own default is INFO for its loggers
    try:
        _, api_key = create_api_key(workspace=workspace, name="logs", role="admin")
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
        domain = api.post("/api/v1/domains", {"name": "mail.acme.com"}, format="json").json()
        provider = api.post("/api/v1/providers", {
            "kind": "smtp", "name": "relay",
            "settings": {"host": "127.0.0.1", "port": auth_smtp_sink.port, "security": "none"},
            "credentials": {"username": SMTP_USER, "password": SMTP_PASSWORD}}, format="json").json()
        mailbox = api.post("/api/v1/mailboxes", {
            "address": "ann@mail.acme.com", "provider": provider["id"], "daily_cap": 10, "weekly_cap": 50,
            "min_interval_seconds": 0,
            "send_window": {"days": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "23:59", "timezone": "UTC"}},
            format="json").json()
        hook = api.post("/api/v1/webhooks", {"url": f"{receiver.url}/hooks", "event_types": ["message.sent"]},
                        format="json").json()
        sent = api.post("/api/v1/messages", {"to": "lead@example.com", "from": mailbox["address"],
                                             "subject": "Hello", "text": "Hi"}, format="json")
        assert sent.status_code == 202, sent.json()
        queues = [django_rq.get_queue(name) for name in ("dispatch", "webhooks")]
        SimpleWorker(queues[:1], connection=redis_conn).work(burst=True)
        SimpleWorker(queues[1:], connection=redis_conn).work(burst=True)
        assert api.get(f"/api/v1/messages/{sent.json()['id']}").json()["status"] == "sent"
    finally:
        receiver.stop()

    assert auth_smtp_sink.logins == [SMTP_USER.encode()], "the send logged in with the stored credentials"
    assert len(auth_smtp_sink.handler_.messages) == 1
    delivery = receiver.requests[-1]
    Webhook(hook["secret"]).verify(delivery.body, delivery.headers)  # the webhook was signed with the secret
    from mailboxes.models import DkimKey

    private_key = DkimKey.objects.get(domain_id=domain["id"]).private_key["pem"]
    key_body = "".join(private_key.strip().splitlines()[1:-1])
    assert len(caplog.records) > 50, "DEBUG logging was on"
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for name, secret in [("API key", api_key), ("API key secret", api_key.partition(".")[2]),
                         ("SMTP password", SMTP_PASSWORD), ("webhook secret", hook["secret"]),
                         ("webhook secret key", hook["secret"].removeprefix("whsec_")),
                         ("DKIM private key", key_body[40:100])]:
        assert secret not in logged, f"the {name} appears in the logs"
