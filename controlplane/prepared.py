"""Statements that run again and again on the hot path (hand-off's claim, journal and application),
prepared: PostgreSQL parses and plans them once per connection instead of on every call.

Django binds parameters on the client (psycopg's ClientCursor), which cannot prepare, and turns
psycopg's automatic preparing off so that transaction-pooling proxies keep working. Here a cursor
that binds on the server prepares just the statements passed to `execute` (PgBouncer 1.21 and later
track protocol-level prepared statements; older transaction pools need `PREPARED_STATEMENTS=0`). The
cursor goes through Django's wrappers, so query logging and execute wrappers see it as any other.

psycopg ignores `prepare=True` while the connection's `prepare_threshold` is None, as Django leaves
it: the threshold is raised to a count no statement reaches, so psycopg keeps its bookkeeping (it
forgets its statements on ROLLBACK, DROP, ALTER) but prepares nothing unasked. Django's client-side
binding cursors never prepare whatever the threshold.
"""

from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

try:
    from django.db.backends.postgresql.base import ServerBindingCursor
except ImportError:  # psycopg 2, or no PostgreSQL driver at all
    ServerBindingCursor = None


ONLY_WHEN_ASKED = 2**31 - 1

if ServerBindingCursor is not None:
    class _PreparingCursor(ServerBindingCursor):
        def execute(self, query, params=None, **kwargs):
            return super().execute(query, params, prepare=True, **kwargs)


class _DebugWrapper(CursorDebugWrapper):
    """Logs a prepared statement with its parameters bound, as Django logs any other (Django reads
    the text back from the psycopg cursor, which keeps none for a prepared execution)."""

    def execute(self, sql, params=None):
        with self.debug_sql(self.db.ops.compose_sql(sql, params), params):
            return CursorWrapper.execute(self, sql, params)


def enabled() -> bool:
    return (connection.vendor == "postgresql" and ServerBindingCursor is not None
            and settings.PREPARED_STATEMENTS)


def cursor():
    """A cursor whose statements are prepared on PostgreSQL (`%s` placeholders, as everywhere in
    Django); elsewhere, Django's own cursor."""
    if not enabled():
        return connection.cursor()
    connection.ensure_connection()
    if connection.connection.prepare_threshold is None:
        connection.connection.prepare_threshold = ONLY_WHEN_ASKED
    raw = _PreparingCursor(connection.connection)
    return _DebugWrapper(raw, connection) if connection.queries_logged else connection.make_cursor(raw)
