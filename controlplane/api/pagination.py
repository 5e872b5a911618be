from rest_framework import exceptions, pagination
from rest_framework.response import Response


class CursorPagination(pagination.CursorPagination):
    """`{"results": [...], "next": url|null}`; ids are time-sortable, so `id` orders by creation."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError(
                {"cursor": ["This cursor is not valid; follow the `next` link of the previous page."]})

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {"results": schema, "next": {"type": "string", "format": "uri", "nullable": True}},
        }
