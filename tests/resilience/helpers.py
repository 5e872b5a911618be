"""Misbehaving servers and clock helpers for the fault-injection tests."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from scripts import servers


class SilentSmtpServer:
    """Accepts TCP connections on loopback and never says a word (no greeting, no replies)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _serve(self):
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted.append(connection)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        for connection in self.accepted:
            with contextlib.suppress(OSError):
                connection.close()
        self.listener.close()


def enqueue_due_retries(connection, queue_name="dispatch"):
    """What RQ's scheduler does each second: moves scheduled jobs that are due onto their queue."""
    from rq.scheduler import RQScheduler

    scheduler = RQScheduler([queue_name], connection=connection)
    scheduler.prepare_registries([queue_name])
    scheduler.enqueue_scheduled_jobs()


class RestartablePostgres:
    """A PostgreSQL server of its own (not the suite's) that a test can stop and start again on the same
    port and data, run as an unprivileged user when we are root (as scripts/servers.py does)."""

    def __init__(self):
        self.user = servers._unprivileged_user()
        self.root = tempfile.mkdtemp(prefix="cp-pg-restart-")
        self.datadir = os.path.join(self.root, "data")
        self.port = servers.free_port()
        self.proc = None
        self._kwargs = {}
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            self._kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        self._env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        subprocess.run([servers.find_pg_binary("initdb"), "-D", self.datadir, "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, stdout=subprocess.DEVNULL, env=self._env,
                       cwd=self.root, **self._kwargs)
        self._log = open(os.path.join(self.root, "postgres.log"), "ab")

    def url(self, database="controlplane"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self):
        self.proc = subprocess.Popen(
            [servers.find_pg_binary("postgres"), "-D", self.datadir, "-p", str(self.port), "-k", self.root,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=60"],
            stdout=self._log, stderr=subprocess.STDOUT, env=self._env, cwd=self.root, **self._kwargs)
        deadline = time.monotonic() + 30
        while True:  # the port opens before the server accepts logins: ask until it answers
            try:
                import psycopg

                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return self
            except Exception:  # noqa: BLE001
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start")
                time.sleep(0.1)

    def stop(self):
        """Fast shutdown, as a restart does: open sessions are cut, in-flight transactions roll back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)
