"""Statements that run once per message on the hot path, prepared: PostgreSQL parses and plans them
once per connection instead of on every call.

Django binds parameters on the client (psycopg's ClientCursor), which cannot prepare, and turns
psycopg's automatic preparing off so that transaction-pooling proxies keep working. Here a cursor
that binds on the server prepares just the statements passed to `execute` (PgBouncer 1.21 and later
track protocol-level prepared statements; older transaction pools need `PREPARED_STATEMENTS=0`). The
cursor goes through Django's wrappers, so query logging and execute wrappers see it as any other.
"""

from django.conf import settings
from django.db import connection

try:
    from django.db.backends.postgresql.base import ServerBindingCursor
except ImportError:  # psycopg 2, or no PostgreSQL driver at all
    ServerBindingCursor = None


if ServerBindingCursor is not None:
    class _PreparingCursor(ServerBindingCursor):
        def execute(self, query, params=None, **kwargs):
            return super().execute(query, params, prepare=True, **kwargs)


def enabled() -> bool:
    return (connection.vendor == "postgresql" and ServerBindingCursor is not None
            and settings.PREPARED_STATEMENTS)


def cursor():
    """A cursor whose statements are prepared on PostgreSQL (`%s` placeholders, as everywhere in
    Django); elsewhere, Django's own cursor."""
    if not enabled():
        return connection.cursor()
    connection.ensure_connection()
    raw = _PreparingCursor(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
