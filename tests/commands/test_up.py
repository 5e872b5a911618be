"""`make up`'s pieces (scripts/up.py), without starting the servers for long."""

import importlib.util
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import load_command_class
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.commands.helpers import run
from workspaces.models import WorkspaceAPIKey

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def up():
    spec = importlib.util.spec_from_file_location("controlplane_up", ROOT / "scripts" / "up.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parses(app, name, argv):
    """The command's own parser accepts these arguments (flags exist in the installed version)."""
    command = load_command_class(app, name)
    command.create_parser("manage.py", name).parse_args(argv)
    return True


def test_child_commands_use_flags_that_exist(up):
    commands = up.process_commands(8123)
    assert commands["web"][2:] == ["runserver", "127.0.0.1:8123", "--noreload"]
    assert parses("django.contrib.staticfiles", "runserver", commands["web"][3:])
    worker = commands["worker"]
    assert worker[2:] == ["runworker"]
    assert set(up.QUEUES) == {"dispatch", "default", "dns", "webhooks"}
    assert parses("controlplane", "runworker", worker[3:])


def test_procfile_process_types():
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert {"web", "worker"} <= set(lines)
    assert lines["web"].startswith("gunicorn controlplane.wsgi ") and "0.0.0.0:$PORT" in lines["web"]
    worker = shlex.split(lines["worker"])
    assert worker[:3] == ["python", "manage.py", "runworker"]
    assert parses("controlplane", "runworker", worker[3:])


def test_cron_configuration_registers_the_periodic_jobs():
    from rq.cron import CronScheduler

    from controlplane.queues import redis_connection

    scheduler = CronScheduler(connection=redis_connection())
    scheduler.load_config_from_file("controlplane.cron")
    names = {job.name for job in scheduler.get_jobs()}
    assert "reconcile" in names and len(names) >= 2


def test_environment_defaults_do_not_override(up):
    env = up.configure_environment({"DEBUG": "false"}, 8000)
    assert env["DEBUG"] == "false"
    assert env["PUBLIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert up.configure_environment({}, 8000)["DEBUG"] == "true"


@pytest.mark.django_db
def test_admin_login_is_created_then_remembered(up, tmp_path):
    from django.contrib.auth import get_user_model

    password, changed = up.ensure_admin(tmp_path)
    admin = get_user_model().objects.get(username="admin")
    assert changed and admin.is_superuser and admin.is_staff and admin.check_password(password)
    assert stat.S_IMODE((tmp_path / "admin-password").stat().st_mode) == 0o600
    assert up.ensure_admin(tmp_path) == (password, False)

    admin.set_password("changed-elsewhere")
    admin.save()
    new_password, changed = up.ensure_admin(tmp_path)
    assert changed and new_password != password
    admin.refresh_from_db()
    assert admin.check_password(new_password)
    events = AuditEvent.objects.filter(chain="global", object_id=str(admin.pk)).values_list("action", flat=True)
    assert list(events) == ["user.created", "user.password_reset"]


@pytest.mark.django_db
def test_demo_api_key_is_created_then_remembered(up, tmp_path):
    run("seeddemo")
    raw, changed = up.ensure_api_key(tmp_path)
    assert changed
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.get("/api/v1/mailboxes").status_code == 200
    assert client.get("/api/v1/audit").status_code == 200  # admin role
    assert up.ensure_api_key(tmp_path) == (raw, False)

    WorkspaceAPIKey.objects.filter(prefix=raw.partition(".")[0]).update(revoked=True)
    other, changed = up.ensure_api_key(tmp_path)
    assert changed and other != raw


def test_banner_names_everything_needed(up):
    text = up.banner(8000, "pw-123", "abc.def", "redis://127.0.0.1:1234/0", True)
    for expected in ("http://127.0.0.1:8000/", "admin", "pw-123", "abc.def", "http://127.0.0.1:8000/api/v1/docs/",
                     "Ctrl-C"):
        assert expected in text


def test_when_one_child_dies_the_others_are_stopped(up):
    procs = up.start({
        "sleeper": [sys.executable, "-c", "import time; time.sleep(60)"],
        "crasher": [sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(3)"],
    }, None)
    started = time.monotonic()
    code = up.supervise(procs, interval=0.05)
    assert code == 3
    assert procs["sleeper"].poll() is not None
    assert time.monotonic() - started < 10


def test_stop_reaches_what_a_child_forked(up):
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    procs = up.start({"parent": [sys.executable, "-c", script]}, None)
    time.sleep(0.5)
    up.stop(procs, grace=5)
    assert procs["parent"].poll() is not None
    assert wait_until_gone(procs["parent"].pid) == []


def living_members(pgid):
    """Processes of a process group that are not zombies (the init process may reap those late)."""
    found = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line.split()[0] for line in found.splitlines() if line.split() and not line.split()[1].startswith("Z")]


def wait_until_gone(pgid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (members := living_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def test_a_watched_problem_stops_everything(up):
    procs = up.start({"sleeper": [sys.executable, "-c", "import time; time.sleep(60)"]}, None)
    assert up.supervise(procs, watch=lambda: "redis went away", interval=0.05) == 1
    assert procs["sleeper"].poll() is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_children_do_not_outlive_a_crashed_supervisor(up, tmp_path):
    """Even if up.py is killed outright (no cleanup), what it started goes too."""
    pid_file = tmp_path / "child.pid"
    script = (
        f"import sys, time; sys.path.insert(0, {str(ROOT / 'scripts')!r}); "
        "import importlib.util; "
        f"spec = importlib.util.spec_from_file_location('up', {str(ROOT / 'scripts' / 'up.py')!r}); "
        "up = importlib.util.module_from_spec(spec); spec.loader.exec_module(up); "
        "procs = up.start({'sleeper': [sys.executable, '-c', 'import time; time.sleep(60)']}, None); "
        f"open({str(pid_file)!r}, 'w').write(str(procs['sleeper'].pid)); time.sleep(60)"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and supervisor.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    supervisor.kill()
    supervisor.wait()
    assert wait_until_gone(child) == []
