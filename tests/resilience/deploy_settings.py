"""The production settings `manage.py check --deploy` is run against: controlplane.settings (whose
HTTPS hardening follows PUBLIC_BASE_URL), plus the content-security-policy middleware on every page."""

from controlplane import settings as _base
from controlplane.settings import *  # noqa: F401,F403

if "controlplane.security.ContentSecurityPolicyMiddleware" not in _base.MIDDLEWARE:
    _at = _base.MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
    MIDDLEWARE = [*_base.MIDDLEWARE[:_at], "controlplane.security.ContentSecurityPolicyMiddleware",
                  *_base.MIDDLEWARE[_at:]]
