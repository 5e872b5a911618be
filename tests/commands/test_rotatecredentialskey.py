import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings as django_settings
from django.core.management.base import CommandError
from django.db import connection

from audit.models import AuditEvent
from mailboxes.dns import dkim
from mailboxes.models import DkimKey, SendingDomain
from providers import services
from providers.models import ProviderConnection
from tests.commands.helpers import run

pytestmark = pytest.mark.django_db

SECRETS = {
    "smtp": {"username": "relay-user", "password": "smtp-pa55word-XYZ"},
    "mailgun": {"api_key": "key-mailgun-0123456789abcdef", "webhook_signing_key": "signing-abcdef-987"},
}


def raw_tokens():
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, credentials FROM providers_providerconnection ORDER BY id")
        tokens = dict(cursor.fetchall())
        cursor.execute("SELECT id, private_key FROM mailboxes_dkimkey ORDER BY id")
        tokens.update(cursor.fetchall())
        return tokens


@pytest.fixture
def connections(workspace, other_workspace):
    domain = SendingDomain.objects.create(workspace=workspace, name="mail.acme.com")
    dkim.generate_key(domain=domain, bits=1024)
    return [
        services.create_connection(workspace=workspace, kind="smtp", name="relay",
                                   settings={"host": "127.0.0.1", "port": 2525, "security": "none"},
                                   credentials=SECRETS["smtp"]),
        services.create_connection(workspace=other_workspace, kind="mailgun", name="mg",
                                   settings={"domain": "mg.example.com"}, credentials=SECRETS["mailgun"]),
    ]


def test_rotation_re_encrypts_everything_with_the_new_key(connections, settings):
    old = list(django_settings.CREDENTIALS_KEYS)
    new = Fernet.generate_key().decode()
    settings.CREDENTIALS_KEYS = [new, *old]
    out, err = run("rotatecredentialskey")
    assert "Re-encrypted 3 secret(s)" in out
    assert "Re-encrypting" in err

    settings.CREDENTIALS_KEYS = [new]
    by_kind = {c.kind: c.credentials for c in ProviderConnection.objects.all()}
    assert by_kind == SECRETS
    assert DkimKey.objects.get().private_key["pem"].startswith("-----BEGIN PRIVATE KEY-----")
    for token in raw_tokens().values():
        assert "PRIVATE KEY" not in token
        for secret in (v for creds in SECRETS.values() for v in creds.values()):
            assert secret not in token
        Fernet(new.encode()).decrypt(token.encode())
        with pytest.raises(InvalidToken):
            Fernet(old[0].encode()).decrypt(token.encode())

    event = AuditEvent.objects.get(chain="global", action="credentials.key_rotated")
    assert event.actor_label == "command:rotatecredentialskey"
    assert event.after == {"re_encrypted": 3}


def test_without_the_old_key_nothing_changes(connections, settings):
    before = raw_tokens()
    settings.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="cannot be decrypted"):
        run("rotatecredentialskey")
    assert raw_tokens() == before
    assert not AuditEvent.objects.filter(action="credentials.key_rotated").exists()


def test_nothing_stored(db):
    out, _ = run("rotatecredentialskey")
    assert "Re-encrypted 0 secret(s)" in out
