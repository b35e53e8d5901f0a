from __future__ import annotations

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.urls import path


def tables(request: HttpRequest, alias: str) -> JsonResponse:
    with connections[alias].cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relkind = %s", ["r"])
        (n,) = cur.fetchone()
    return JsonResponse({"tables": n})


urlpatterns = [path("tables/<str:alias>", tables)]
