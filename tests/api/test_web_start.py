"""Web and worker processes load what they serve when they start, not on their first request or job."""

import os
import subprocess
import sys

from django.conf import settings


def _loaded_after(start: str, modules: list[str]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported once `start` has run."""
    probe = f"import sys; {start}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=settings.BASE_DIR, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "controlplane.settings"})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_wsgi_application_loads_the_api_and_hand_off_at_start():
    modules = ["controlplane.api.messages", "controlplane.intake", "controlplane.dispatch", "controlplane.effects"]
    assert _loaded_after("import controlplane.wsgi", modules) == modules


def test_a_worker_loads_its_jobs_and_the_provider_transports_at_start():
    modules = ["controlplane.dispatch", "controlplane.webhooks", "mailboxes.jobs", "providers.smtp", "providers.esp",
               "providers.google_workspace", "providers.microsoft_365"]
    assert _loaded_after("import django; django.setup(); import controlplane.worker", modules) == modules
