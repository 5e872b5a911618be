"""Pages outside the API when something is wrong: the database unreachable (503) and a locked-out sign-in (429).

The API answers a database outage itself (controlplane/api/errors.py); the admin, the unsubscribe pages and
the provider callbacks get the same 503 with `Retry-After` here: the contract's JSON error shape under
`/api/` and `/hooks/`, a short HTML page elsewhere. A lost connection in a view (or its template) is caught
by the middleware; one in another middleware (such as the session's user lookup) reaches `server_error`,
the project's handler500. Neither touches the database.
"""

import logging
import math
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

from controlplane.api import errors

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
UNAVAILABLE_MESSAGE = "The database is unreachable for a moment; retry shortly."
UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Temporarily unavailable</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}</style>
</head><body><h1>Temporarily unavailable</h1>
<p>The service cannot reach its database right now. Nothing you did caused this, and nothing was lost:
try again in a few seconds.</p>
<p><small>Retry after {seconds} seconds.</small></p></body></html>
"""


def unavailable(request):
    """503 with Retry-After: JSON in the contract's error shape for machines, a page for people."""
    if request.path.startswith(("/api/", "/hooks/")):
        response = JsonResponse(errors.error_body("service_unavailable", UNAVAILABLE_MESSAGE), status=503)
    else:
        response = HttpResponse(UNAVAILABLE_PAGE.format(seconds=errors.RETRY_AFTER_SECONDS), status=503,
                                content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(errors.RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    """A lost database connection in a view or its template answers 503, logged as one warning line."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, DATABASE_ERRORS):
            return None
        logger.warning("Database unavailable on %s: %s", request.path, exception.__class__.__name__)
        return unavailable(request)


def server_error(request):
    """handler500: called while the exception is being handled, so a database outage is still a 503."""
    if isinstance(sys.exc_info()[1], DATABASE_ERRORS):
        return unavailable(request)
    return errors.handler500(request)


def login_locked_out(request, original_response=None, credentials=None):
    """django-axes' lockout answer: the admin sign-in page again, saying why and for how long (429)."""
    from axes.helpers import get_client_username, get_cool_off
    from django.contrib import admin
    from django.contrib.admin.forms import AdminAuthenticationForm
    from django.contrib.auth import REDIRECT_FIELD_NAME
    from django.forms.utils import ErrorDict
    from django.shortcuts import render

    cool_off = get_cool_off(request)
    minutes = math.ceil(cool_off.total_seconds() / 60) if cool_off else 0
    wait = f"Try again in {minutes} minute{'s' if minutes != 1 else ''}, or ask" if minutes else "Ask"
    message = (f"Too many failed sign-ins for this username from your address, so signing in is locked. "
               f"{wait} an administrator to unlock it.")
    username = get_client_username(request, credentials) or ""
    form = AdminAuthenticationForm(request, initial={"username": username})
    form._errors = ErrorDict({"__all__": form.error_class([message], error_class="nonfield")})
    context = {
        **admin.site.each_context(request),
        "title": "Log in",
        "subtitle": None,
        "app_path": request.get_full_path(),
        "form": form,
        "username": username,
        REDIRECT_FIELD_NAME: request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME, ""),
    }
    response = render(request, "admin/login.html", context, status=429)
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
