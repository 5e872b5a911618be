"""Web and worker processes load what they serve when they start, not on their first request or job."""

import os
import subprocess
import sys

from django.conf import settings


def test_the_wsgi_application_loads_the_api_and_hand_off_at_start():
    probe = ("import sys, controlplane.wsgi; "
             "print(' '.join(m for m in ('controlplane.api.messages', 'controlplane.intake', 'controlplane.dispatch', "
             "'controlplane.effects') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=settings.BASE_DIR, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "DEBUG": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["controlplane.api.messages", "controlplane.intake", "controlplane.dispatch",
                                  "controlplane.effects"]


def test_a_worker_loads_its_jobs_and_the_provider_transports_at_start():
    probe = ("import sys, django; django.setup(); import controlplane.worker; "
             "print(' '.join(m for m in ('controlplane.dispatch', 'controlplane.webhooks', 'mailboxes.jobs', "
             "'providers.smtp', 'providers.esp', 'providers.google_workspace', 'providers.microsoft_365') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=settings.BASE_DIR, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "controlplane.settings"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["controlplane.dispatch", "controlplane.webhooks", "mailboxes.jobs", "providers.smtp",
                                  "providers.esp", "providers.google_workspace", "providers.microsoft_365"]
