from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import connection

from providers import services
from workspaces.management.commands._common import AuditedCommand


class Command(AuditedCommand):
    help = ("Re-encrypts every stored secret (every encrypted column: provider credentials, DKIM private keys, …) "
            "with the first key of CREDENTIALS_KEYS, in one transaction. Put the new key first and keep the old "
            "ones after it until this has run.")

    def handle(self, *args, **options):
        try:
            with self.progress(total=self.stored(), desc="Re-encrypting", unit="secret", options=options) as bar:
                count = services.rotate_all_credentials(progress=bar.update)
        except InvalidToken:
            raise CommandError("A stored secret cannot be decrypted with any key in CREDENTIALS_KEYS: keep the "
                               "old key after the new one. Nothing was changed.")
        except ImproperlyConfigured as exc:
            raise CommandError(f"{exc} Nothing was changed.")
        keys = len(settings.CREDENTIALS_KEYS)
        self.stdout.write(f"Re-encrypted {count} secret(s) with the first of {keys} key(s) in CREDENTIALS_KEYS.")
        if keys > 1:
            self.stdout.write("Stored secrets no longer need the other keys; remove them once every process "
                              "runs with the new key first.")

    @staticmethod
    def stored() -> int:
        """How many values the rotation will touch (counted in SQL: the columns hold tokens)."""
        total = 0
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            for model, field in services.encrypted_columns():
                column = quote(field.column)
                cursor.execute(f"SELECT COUNT(*) FROM {quote(model._meta.db_table)} "
                               f"WHERE {column} IS NOT NULL AND {column} <> ''")
                total += cursor.fetchone()[0]
        return total
