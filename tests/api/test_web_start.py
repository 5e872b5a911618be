"""Web and worker processes load what they serve when they start, not on their first request or job, and
then put what they loaded out of the garbage collector's reach (it lives as long as the process)."""

import os
import subprocess
import sys

from django.conf import settings


def _run(probe: str, env=None) -> str:
    out = subprocess.run([sys.executable, "-c", probe], cwd=settings.BASE_DIR, capture_output=True, text=True,
                         timeout=120, env={**(env or os.environ), "DEBUG": "1",
                                           "DJANGO_SETTINGS_MODULE": "controlplane.settings"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _loaded_after(start: str, modules: list[str]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported once `start` has run."""
    return _run(f"import sys; {start}; print(' '.join(m for m in {modules!r} if m in sys.modules))").split()


# After `start`: how many objects are frozen (out of the collector's reach), and how many it still tracks.
_COLLECTOR = "; import gc; print(gc.get_freeze_count(), len(gc.get_objects()))"


def test_the_wsgi_application_loads_the_api_and_hand_off_at_start():
    modules = ["controlplane.api.messages", "controlplane.intake", "controlplane.dispatch", "controlplane.effects"]
    assert _loaded_after("import controlplane.wsgi", modules) == modules


def test_a_worker_loads_its_jobs_and_the_provider_transports_at_start():
    modules = ["controlplane.dispatch", "controlplane.webhooks", "mailboxes.jobs", "providers.smtp", "providers.esp",
               "providers.google_workspace", "providers.microsoft_365"]
    assert _loaded_after("import django; django.setup(); import controlplane.worker", modules) == modules


def test_the_wsgi_application_freezes_what_it_loaded():
    frozen, tracked = map(int, _run("import controlplane.wsgi" + _COLLECTOR).split())
    assert frozen > 50_000 and tracked < frozen / 20


def test_a_worker_freezes_what_it_loaded_before_its_first_job(process_env):
    start = ("import django; django.setup(); from django.conf import settings; from redis import Redis; "
             "from controlplane.worker import Worker; "
             "Worker(['dispatch'], connection=Redis.from_url(settings.REDIS_URL)).work(burst=True)")
    frozen, tracked = map(int, _run(start + _COLLECTOR, env=process_env).split())
    assert frozen > 50_000 and tracked < frozen / 20
