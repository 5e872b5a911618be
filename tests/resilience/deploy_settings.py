"""The production settings `manage.py check --deploy` is run against: controlplane.settings, plus the
HTTPS hardening, schema naming and CSP middleware proposed for it. Each addition applies only while
controlplane.settings does not define it itself, so this module becomes a plain alias once it does."""

from controlplane import settings as _base
from controlplane.settings import *  # noqa: F401,F403

env = _base.env

if not hasattr(_base, "SECURE_HSTS_SECONDS"):
    # HTTPS hardening follows PUBLIC_BASE_URL: on when the service is served over https (each overridable).
    _HTTPS = _base.PUBLIC_BASE_URL.startswith("https://")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_HTTPS)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=_HTTPS)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=_HTTPS)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if _HTTPS else 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_HTTPS)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    # Behind a proxy or router that terminates TLS: trust its X-Forwarded-Proto.
    if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

if "ENUM_NAME_OVERRIDES" not in _base.SPECTACULAR_SETTINGS:
    SPECTACULAR_SETTINGS = {**_base.SPECTACULAR_SETTINGS,
                            "ENUM_NAME_OVERRIDES": {"MessageStatusEnum": "controlplane.models.STATUS_CHOICES"}}

if "controlplane.security.ContentSecurityPolicyMiddleware" not in _base.MIDDLEWARE:
    _at = _base.MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
    MIDDLEWARE = [*_base.MIDDLEWARE[:_at], "controlplane.security.ContentSecurityPolicyMiddleware",
                  *_base.MIDDLEWARE[_at:]]
