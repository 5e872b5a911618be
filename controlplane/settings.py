"""Settings come only from the environment (django-environ); see README and .env.example."""

import base64
import datetime as dt
import hashlib
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    PUBLIC_BASE_URL=(str, "http://127.0.0.1:8000"),
    CREDENTIALS_KEYS=(list, []),
    DNS_NAMESERVERS=(list, []),
    DNSBL_ZONES=(list, ["dbl.spamhaus.org"]),
    WEBHOOKS_ALLOW_PRIVATE=(bool, False),
    LOG_LEVEL=(str, "INFO"),
)
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env("DEBUG")
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is false.")
    SECRET_KEY = "insecure-development-key-change-me"

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL").rstrip("/")
CSRF_TRUSTED_ORIGINS = [PUBLIC_BASE_URL]


def _credentials_keys():
    keys = [k.strip() for k in env("CREDENTIALS_KEYS") if k.strip()]
    if keys:
        return keys
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("CREDENTIALS_KEYS is required when DEBUG is false.")
    # Development only: a stable key derived from SECRET_KEY so `make up` needs no setup.
    return [base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()]


CREDENTIALS_KEYS = _credentials_keys()
DNS_NAMESERVERS = [n.strip() for n in env("DNS_NAMESERVERS") if n.strip()]
DNSBL_ZONES = [z.strip() for z in env("DNSBL_ZONES") if z.strip()]
WEBHOOKS_ALLOW_PRIVATE = env("WEBHOOKS_ALLOW_PRIVATE")
# Domain checks: seconds per DNS query, domains checked at once, and the daily schedule (cron, UTC).
DNS_QUERY_TIMEOUT = env.float("DNS_QUERY_TIMEOUT", default=3.0)
DNS_CHECK_CONCURRENCY = env.int("DNS_CHECK_CONCURRENCY", default=48)
DNS_CHECK_CRON = env("DNS_CHECK_CRON", default="0 6 * * *")
# Outbound webhooks: waits between delivery attempts (about 27 hours in all), then the delivery fails.
WEBHOOK_RETRY_DELAYS = [int(x) for x in env.list(
    "WEBHOOK_RETRY_DELAYS", default=["5", "300", "1800", "7200", "18000", "36000", "36000"])]
# Provider callbacks larger than this are refused with 413.
PROVIDER_CALLBACK_MAX_BYTES = env.int("PROVIDER_CALLBACK_MAX_BYTES", default=1024 * 1024)
# Mailbox health is judged over this many of its latest sends.
HEALTH_WINDOW_SENDS = env.int("HEALTH_WINDOW_SENDS", default=200)
# SMTP hand-off: seconds before a silent server is given up on (the attempt is then retried).
SMTP_TIMEOUT_SECONDS = env.float("SMTP_TIMEOUT_SECONDS", default=30.0)
# HTTPS hardening follows PUBLIC_BASE_URL: on by default when it is https.
_HTTPS = PUBLIC_BASE_URL.startswith("https://")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_HTTPS)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=_HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=_HTTPS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How long a worker owns a message it is handing off before the reconciler may take it back.
DISPATCH_LEASE_SECONDS = env.int("DISPATCH_LEASE_SECONDS", default=300)
DISPATCH_BATCH_SIZE = env.int("DISPATCH_BATCH_SIZE", default=100)
# Waits between attempts after a transient provider error; after the last, fail over or fail.
DISPATCH_RETRY_DELAYS = [int(x) for x in env.list("DISPATCH_RETRY_DELAYS", default=["30", "120", "600", "1800", "3600"])]

INSTALLED_APPS = [
    "unfold",  # the admin theme; before django.contrib.admin so its templates win
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "django_rq",
    "axes",
    "controlplane",
    "workspaces",
    "audit",
    "providers",
    "mailboxes",
    "suppression",
    "controlplane.stats",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "controlplane.security.ContentSecurityPolicyMiddleware",
    "audit.context.AuditContextMiddleware",
    "axes.middleware.AxesMiddleware",
    "controlplane.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'controlplane.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Keep connections between requests (a new PostgreSQL connection costs more than most requests).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Hand-off's per-message statements are prepared on PostgreSQL (controlplane/prepared.py); 0 for a
# transaction-pooling proxy that does not track prepared statements (PgBouncer before 1.21).
PREPARED_STATEMENTS = env.bool("PREPARED_STATEMENTS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let web, worker and scheduler share the file in `make up`.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
RQ_QUEUE_NAMES = ["dispatch", "default", "dns", "webhooks"]
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300} for name in RQ_QUEUE_NAMES}
# Jobs run in the worker process (no fork per job): see controlplane/worker.py.
RQ = {"WORKER_CLASS": "controlplane.worker.Worker"}

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out sign-ins
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["workspaces.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["workspaces.api.permissions.KeyRolePermission"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.api.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
    "URL_FORMAT_OVERRIDE": None,  # `?format=` belongs to the audit export
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Outbound email control plane API",
    "DESCRIPTION": "Capped dispatch, suppression, sending identities and evidence for cold outbound.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Docs assets are served from this process, so /api/v1/docs/ works offline.
    "ENUM_NAME_OVERRIDES": {"MessageStatusEnum": "controlplane.models.STATUS_CHOICES"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "controlplane.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL")},
}

LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "admin:index"  # the admin theme's login form posts no `next`

# Sign-in throttling (django-axes): after LOGIN_FAILURE_LIMIT failed admin sign-ins for one username from one
# address, that pair is locked out for LOGIN_COOLOFF_MINUTES; a success resets the count.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "controlplane.middleware.login_locked_out"
AXES_ENABLE_ADMIN = False
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

# The admin theme (django-unfold): its names and sidebar (controlplane/admin_theme.py).
UNFOLD = {
    "SITE_TITLE": "Outbound control plane",
    "SITE_HEADER": "Outbound control plane",
    "SITE_SYMBOL": "forward_to_inbox",
    "SHOW_HISTORY": True,
    "SHOW_VIEW_ON_SITE": False,
    "SIDEBAR": {"show_search": True, "show_all_applications": True,
                "navigation": "controlplane.admin_theme.sidebar"},
}
