"""One error shape for every API answer: {"error": {"code", "message", "fields"?}}."""

import logging

from django.core.exceptions import PermissionDenied
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

# What a 503 (database unreachable) tells clients to wait before retrying.
RETRY_AFTER_SECONDS = 2


class PolicyRejection(exceptions.APIException):
    """A sending-policy decision, carried as a value and rendered as 422 with its code and details."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, code, message, **details):
        super().__init__(detail=message, code=code)
        self.error_code = code
        self.message = message
        self.details = details


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT

    def __init__(self, code, message):
        super().__init__(detail=message, code=code)
        self.error_code = code


def error_body(code, message, fields=None, **extra):
    body = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    body.update(extra)
    return {"error": body}


def _flatten_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _flatten_message(detail[0])
    if isinstance(detail, dict) and detail:
        return _flatten_message(next(iter(detail.values())))
    return str(detail)


def _fields(detail):
    if isinstance(detail, dict):
        return {k: _fields(v) for k, v in detail.items()}
    if isinstance(detail, list):
        if all(not isinstance(i, (dict, list)) for i in detail):
            return [str(i) for i in detail]
        return [_fields(i) for i in detail]
    return [str(detail)]


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, PolicyRejection):
        return Response(error_body(exc.error_code, exc.message, **exc.details), status=exc.status_code)
    if isinstance(exc, Conflict):
        return Response(error_body(exc.error_code, str(exc.detail)), status=exc.status_code)

    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("Database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        return Response(error_body("service_unavailable", "The database is unreachable for a moment; retry shortly "
                                   "(with the same Idempotency-Key, if the request had one)."),
                        status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, DataError):
        logger.info("Refused a value the database cannot store: %s", exc)
        message = "The request holds a value that cannot be stored (such as a NUL character or an out-of-range number)."
        return Response(error_body("validation_error", message, {"non_field_errors": [message]}), status=400)

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(error_body("server_error", "Something went wrong on our side; the request id identifies it."),
                        status=500)

    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            fields = _fields(detail)
            non_field = fields.pop("non_field_errors", None)
            message = non_field[0] if non_field else "Some fields are invalid."
            if non_field:
                fields["non_field_errors"] = non_field
        else:
            fields = {"non_field_errors": _fields(detail)}
            message = _flatten_message(detail)
        response.data = error_body("validation_error", message, fields)
    elif isinstance(exc, exceptions.ParseError):
        response.data = error_body("malformed_json", f"The request body is not valid JSON: {exc.detail}")
    elif isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        response.status_code = 401
        response.data = error_body("not_authenticated", str(exc.detail))
    elif isinstance(exc, exceptions.PermissionDenied):
        response.data = error_body("permission_denied", str(exc.detail))
    elif isinstance(exc, exceptions.NotFound):
        response.data = error_body("not_found", "Not found.")
    elif isinstance(exc, exceptions.MethodNotAllowed):
        response.data = error_body("method_not_allowed", str(exc.detail))
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        response.data = error_body("unsupported_media_type", str(exc.detail))
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body("throttled", str(exc.detail))
    else:
        code = exc.get_codes() if hasattr(exc, "get_codes") else "error"
        response.data = error_body(code if isinstance(code, str) else "error", _flatten_message(exc.detail))
    return response


def _wants_json(request):
    return request.path.startswith("/api/") or request.path.startswith("/hooks/")


def handler404(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if _wants_json(request):
        return JsonResponse(error_body("server_error", "Something went wrong on our side."), status=500)
    from django.views.defaults import server_error

    return server_error(request)
