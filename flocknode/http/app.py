"""The starlette application: routes over one status snapshot per request."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from flocknode.http.collector import NodeCollector
from flocknode.http.page import render_page
from flocknode.http.readiness import not_ready_reasons
from flocknode.status import NodeStatus

Snapshot = Callable[[], NodeStatus]

# The page is self-contained: the browser may load nothing from anywhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), separators=(",", ":")).encode()


def _finite(v: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def build_app(snapshot: Snapshot, registry: CollectorRegistry | None = None) -> Starlette:
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
    registry.register(NodeCollector(snapshot))

    async def page(request: Request) -> Response:
        s = snapshot()
        return HTMLResponse(render_page(s, not_ready_reasons(s)), headers=PAGE_HEADERS)

    async def status_json(request: Request) -> Response:
        return _JSON(snapshot().to_json(), headers={"Cache-Control": "no-store"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return _JSON({"status": "alive"})

    async def readyz(request: Request) -> Response:
        reasons = not_ready_reasons(snapshot())
        return _JSON(
            {"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200
        )

    return Starlette(
        routes=[
            Route("/", page),
            Route("/status.json", status_json),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )
