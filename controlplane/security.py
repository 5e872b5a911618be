"""Content-Security-Policy for the pages people open in a browser: the admin and the unsubscribe pages.

The unsubscribe pages carry their policy through `content_security_policy`; every other HTML page gets
`CONTENT_SECURITY_POLICY` (default `ADMIN_POLICY`) from `ContentSecurityPolicyMiddleware`, except the API's
browsable docs (third-party pages under /api/) and django-rq's pages, which get `QUEUES_POLICY`. A response that
already has a policy keeps it.

What `ADMIN_POLICY` allows, and why:

- scripts only from this origin, never inline: our templates carry no inline script or event-handler attribute
  (charts and copy buttons are static files reading data-* attributes);
- ``'unsafe-eval'`` for scripts: the admin theme (django-unfold) ships the standard Alpine.js build, which compiles
  the expressions in its templates' ``x-data`` / ``x-on`` attributes with ``new Function``. Alpine's CSP build
  cannot parse those expressions (unfold issue #2129 asks for it; unfold has no CSP-ready build), so without it
  the sidebar, filters, action bar and theme switch stop working. It lets scripts already allowed to run
  evaluate strings; it does not let an injected ``<script>`` or ``onclick`` run. Injected markup could still
  carry Alpine attributes, so output escaping (Django templates escape by default) stays the first defence;
- inline styles: the theme writes its colours in a ``<style>`` element and positions menus with ``style``
  attributes;
- images from this origin and ``data:`` URLs (the theme's icons in CSS); fonts from this origin;
- no plugins, no framing by other sites, forms posting only here, ``<base>`` only here.
"""

import functools

from django.conf import settings

# A page with one inline stylesheet and a form posting to itself: nothing else may load or run.
UNSUBSCRIBE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
                      "frame-ancestors 'none'")
ADMIN_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
                "form-action 'self'; frame-ancestors 'none'")
# django-rq's job pages start jQuery actions from inline scripts.
QUEUES_POLICY = ADMIN_POLICY.replace("script-src 'self' 'unsafe-eval'",
                                     "script-src 'self' 'unsafe-eval' 'unsafe-inline'")
UNPOLICED_PREFIXES = ("/api/",)


def _apply(response, policy):
    content_type = response.get("Content-Type", "")
    if policy and "Content-Security-Policy" not in response and content_type.startswith("text/html"):
        response["Content-Security-Policy"] = policy
    return response


def content_security_policy(policy):
    """View decorator: HTML answers of the view carry `policy`."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            return _apply(view(request, *args, **kwargs), policy)

        return wrapped

    return decorator


def policy_for(path):
    if path.startswith(UNPOLICED_PREFIXES):
        return None
    if path.startswith("/django-rq/"):
        return QUEUES_POLICY
    return getattr(settings, "CONTENT_SECURITY_POLICY", ADMIN_POLICY)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return _apply(self.get_response(request), policy_for(request.path))
