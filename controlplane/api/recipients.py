"""`/recipients/{address}`: the answer to “what happened with this prospect?”, and erasure."""

import csv
import io

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import recipients
from controlplane.api.schema import ControlPlaneAutoSchema
from suppression.services import InvalidValue

CSV_COLUMNS = ["message", "status", "from", "provider", "workload", "created_at", "sent_at", "event", "event_at",
               "event_data"]


def _address(raw):
    try:
        return recipients.normalise(raw)
    except InvalidValue as exc:
        raise ValidationError({"address": [str(exc)]})


class RecipientView(APIView):
    schema = ControlPlaneAutoSchema()

    @extend_schema(parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv", "access"])],
                   responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.BINARY})
    def get(self, request, address):
        workspace = request.user.workspace
        address = _address(address)
        fmt = request.query_params.get("format", "json")
        if fmt == "access":
            if request.user.role != "admin":
                from rest_framework.exceptions import PermissionDenied

                raise PermissionDenied("Only an admin key may export message content.")
            return Response(recipients.access_export(workspace, address))
        data = recipients.history(workspace, address)
        if fmt == "json":
            return Response(data)
        if fmt != "csv":
            raise ValidationError({"format": ["Must be json, csv or access."]})
        return _csv(data)


def _csv(data):
    import json

    from audit.export import escape_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for message in data["messages"]:
        base = [message["id"], message["status"], message["from"], message["provider"], message["workload"],
                message["created_at"], message["sent_at"]]
        for event in message["events"] or [None]:
            tail = [event["type"], event["occurred_at"], json.dumps(event["data"], sort_keys=True)] if event else ["", "", ""]
            writer.writerow([escape_cell(v) for v in base + tail])
    entry = (data["suppression"] or {}).get("entry")
    if entry:  # why the address is suppressed, with the unsubscribe's evidence
        writer.writerow([escape_cell(v) for v in ["", "suppressed", "", "", "", entry["created_at"], "",
                                                  "suppression", entry["created_at"],
                                                  json.dumps(entry, sort_keys=True)]])
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="recipient.csv"'
    return response


class RecipientEraseView(APIView):
    schema = ControlPlaneAutoSchema()
    write_roles = {"admin"}

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, address):
        return Response(recipients.erase(workspace=request.user.workspace, address=_address(address)))
