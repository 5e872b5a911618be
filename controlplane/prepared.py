"""Statements that run once per message on the hot path, prepared: PostgreSQL parses and plans them
once per connection instead of on every call.

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

import hashlib
import select
import weakref

from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

try:
    import psycopg
    from psycopg import pq
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


class SentAhead:
    """One statement run again and again, each run sent at once and its result read only when the caller
    needs it (`wait`, or the next `send`): the caller goes on working while PostgreSQL runs it, instead
    of sleeping on the reply and waking up for it. Each run commits on its own (autocommit), and the
    next is sent only once the last one's result was read, so at most one is in flight. `with` waits
    for the last one.

    Hand-off journals each accepted message so, and builds the next message meanwhile. The statement
    (`%s` placeholders, no literal `%`) is prepared through psycopg's libpq connection (`pgconn`),
    again if it was deallocated meanwhile (psycopg deallocates every prepared statement on ROLLBACK).
    It runs as a plain execute, its result read at once, where sending ahead is not possible or not
    wanted: on another database, with `PREPARED_STATEMENTS` off, inside a transaction, or while
    queries are logged (so that logging and query counts see it as any other). Parameters are
    strings, datetimes or None."""

    def __init__(self, sql: str):
        self.sql = sql
        self.pending = False
        self.direct = not enabled() or connection.queries_logged or connection.in_atomic_block
        if self.direct:
            self.cursor = cursor()
            return
        connection.ensure_connection()
        self.raw = connection.connection
        self.errors = connection.wrap_database_errors  # Django's errors for psycopg's (kept: read per run)
        self.pgconn = self.raw.pgconn
        self.name = b"controlplane_" + hashlib.sha1(sql.encode()).hexdigest()[:16].encode()
        parts = sql.split("%s")
        self.text = "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1)).encode()
        self.values = []
        if self.name not in _PREPARED.setdefault(self.raw, set()):
            self._prepare()

    def send(self, params):
        if self.direct:
            self.cursor.execute(self.sql, params)
            return
        self.wait()
        self.values = [None if v is None else (v.isoformat() if hasattr(v, "isoformat") else v).encode()
                       for v in params]
        self._send()

    def wait(self, *, again=True):
        """Reads the result of the statement in flight, if any; raises its error (as Django's)."""
        if not self.pending:
            return
        with self.errors:
            self.pending = False
            self.pgconn.consume_input()
            while self.pgconn.is_busy():
                _poll(self.pgconn, select.POLLIN)
                self.pgconn.consume_input()
            results = []
            while (result := self.pgconn.get_result()) is not None:
                results.append(result)
            failed = next((r for r in results if r.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)),
                          None)
            if failed is None:
                return
            if again and _sqlstate(failed) == _NO_SUCH_STATEMENT:  # deallocated since: prepared and run again
                self._prepare()
                self._send()
                return self.wait(again=False)
            raise _error(failed)

    def _prepare(self):
        with self.errors:
            result = self.pgconn.prepare(self.name, self.text)
            if result.status != pq.ExecStatus.COMMAND_OK and _sqlstate(result) != _ALREADY_PREPARED:
                raise _error(result)
        _PREPARED[self.raw].add(self.name)

    def _send(self):
        with self.errors:
            self.pgconn.send_query_prepared(self.name, self.values)
            self.pending = True
            while self.pgconn.flush():  # the socket's buffer is full: wait until it takes the rest
                _poll(self.pgconn, select.POLLOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.wait()
        finally:
            if self.direct:
                self.cursor.close()


_NO_SUCH_STATEMENT, _ALREADY_PREPARED = b"26000", b"42P05"
_PREPARED = weakref.WeakKeyDictionary()  # psycopg connection -> names of the statements SentAhead prepared on it


def _sqlstate(result):
    return result.error_field(pq.DiagnosticField.SQLSTATE)


def _error(result):
    return psycopg.DatabaseError((result.error_message or b"").decode(errors="replace").strip())


def _poll(pgconn, event):
    poller = select.poll()
    poller.register(pgconn.socket, event)
    poller.poll()
