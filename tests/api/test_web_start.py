"""A web worker loads the API when it starts, not on its first request."""

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
