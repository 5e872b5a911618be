"""Content-Security-Policy for the pages people open in a browser: the admin and the unsubscribe pages.

The unsubscribe pages carry their policy through `content_security_policy`; everything else gets
`CONTENT_SECURITY_POLICY` (or `ADMIN_POLICY`) from `ContentSecurityPolicyMiddleware` once it is in
MIDDLEWARE. A response that already has a policy keeps it.
"""

import functools

from django.conf import settings

# A page with one inline stylesheet and a form posting to itself: nothing else may load or run.
UNSUBSCRIBE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
                      "frame-ancestors 'none'")
# Django's admin loads its scripts, styles and images from this origin; our templates add inline styles.
ADMIN_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


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


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return _apply(self.get_response(request), getattr(settings, "CONTENT_SECURITY_POLICY", ADMIN_POLICY))
