"""Reference endpoints that the benchmarks compare the product against, in the same run:
a trivial DRF view (the framework's ceiling) and a bare endpoint that COPYs the same
event rows into a table shaped like the events table (the database's ceiling)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

COPY_TABLE = "bench_event_copy"
COLUMNS = (
    "source_id",
    "message_id",
    "profile_id",
    "type",
    "event",
    "anonymous_id",
    "user_id",
    "timestamp",
    "received_at",
    "properties",
    "traits",
    "context",
    "is_bot",
)


class TrivialApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


@csrf_exempt
def bare_copy(request: HttpRequest) -> HttpResponse:
    body: Any = orjson.loads(request.body)
    now = datetime.now(UTC)
    profile = uuid.UUID(int=0)
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor
        cols = ", ".join(COLUMNS)
        with raw.copy(f"COPY {COPY_TABLE} ({cols}) FROM STDIN") as copy:
            for e in body["batch"]:
                copy.write_row(
                    (
                        1,
                        e["message_id"],
                        profile,
                        e["type"],
                        e.get("event", ""),
                        e.get("anonymous_id"),
                        e.get("user_id"),
                        e.get("timestamp") or now,
                        now,
                        orjson.dumps(e.get("properties", {})).decode(),
                        "{}",
                        orjson.dumps(e.get("context", {})).decode(),
                        False,
                    )
                )
    return HttpResponse(
        orjson.dumps({"accepted": len(body["batch"])}), status=202, content_type="application/json"
    )
