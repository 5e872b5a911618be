import os
from importlib import import_module

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from controlplane import runtime

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()

# Load what requests use when the worker starts rather than on its first request: the URLconf (and
# with it the views and the services they import), and the modules the API imports inside functions
# to break import cycles. The first calls after a deploy are then no slower than the rest, and an
# import error stops the worker at start instead of failing requests.
get_resolver().url_patterns
for module in ("controlplane.dispatch", "controlplane.effects"):
    import_module(module)
runtime.settle()
