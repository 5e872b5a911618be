"""Provider connections: the only writers of credentials, which the audit log sees as “[changed]”."""

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from providers import crypto
from providers.models import ProviderConnection


def _public(connection):
    return {"kind": connection.kind, "name": connection.name, "settings": connection.settings}


@transaction.atomic
def create_connection(*, workspace, kind, name, settings=None, credentials=None) -> ProviderConnection:
    connection = ProviderConnection.objects.create(
        workspace=workspace, kind=kind, name=name, settings=settings or {}, credentials=credentials or {},
        credentials_updated_at=timezone.now() if credentials else None,
    )
    after = _public(connection)
    after["credentials"] = "[set]" if credentials else "[none]"
    audit.record(workspace=workspace, action="provider.created", obj=connection, after=after)
    return connection


@transaction.atomic
def update_connection(*, connection, name=None, settings=None, credentials=None) -> ProviderConnection:
    connection = ProviderConnection.objects.select_for_update().get(pk=connection.pk)
    before = _public(connection)
    if name is not None:
        connection.name = name
    if settings is not None:
        connection.settings = settings
    changed_credentials = credentials is not None and credentials != connection.credentials
    if credentials is not None:
        connection.credentials = credentials
        connection.credentials_updated_at = timezone.now()
    connection.save()
    before, after = audit.diff(before, _public(connection))
    if changed_credentials:
        before["credentials"], after["credentials"] = "[redacted]", "[changed]"
    if after:
        audit.record(workspace=connection.workspace, action="provider.updated", obj=connection,
                     before=before, after=after)
    return connection


def encrypted_columns():
    """(model, field) for every column stored with EncryptedJSONField."""
    from django.apps import apps

    return [(model, field) for model in apps.get_models() for field in model._meta.concrete_fields
            if isinstance(field, crypto.EncryptedJSONField)]


def rotate_all_credentials(*, progress=None) -> int:
    """Re-encrypts every stored secret (credentials, DKIM private keys) with the first key of CREDENTIALS_KEYS."""
    from django.db import connection as db

    count = 0
    with transaction.atomic():
        for model, field in encrypted_columns():
            table, column, pk = model._meta.db_table, field.column, model._meta.pk.column
            with db.cursor() as cursor:
                cursor.execute(f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} <> '' "
                               f"FOR UPDATE" if db.vendor == "postgresql" else
                               f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} <> ''")
                rows = cursor.fetchall()
            for row_pk, token in rows:
                with db.cursor() as cursor:
                    cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s",
                                   [crypto.rotate_token(token), row_pk])
                count += 1
                if progress:
                    progress(1)
        audit.record(workspace=None, action="credentials.key_rotated", object_type="encrypted_secrets",
                     after={"re_encrypted": count})
    return count
