"""Unauthenticated routes for tests and operators: config, log, stats, reset.

``GET /_control`` returns the config; ``POST /_control`` applies a partial JSON
object (400 with the reason if a value is bad); ``GET /_log`` returns every
logged call; ``GET /_stats`` the counters; ``POST /_reset`` clears them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pipeline.fake_server.state import STATE


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


async def get_control(request: web.Request) -> web.Response:
    """The current fault config."""
    return _json(request.app[STATE].config.as_json())


async def post_control(request: web.Request) -> web.Response:
    """Change some fields of the fault config."""
    try:
        changes = json.loads(await request.read())
    except ValueError as exc:
        return _json({"error": f"body is not valid JSON: {exc}"}, 400)
    if not isinstance(changes, dict):
        return _json({"error": "body must be a JSON object"}, 400)
    try:
        config = request.app[STATE].set_faults(**changes)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    return _json(config.as_json())


async def get_log(request: web.Request) -> web.Response:
    """Every API call logged since the last reset."""
    return _json([entry.as_json() for entry in request.app[STATE].log])


async def get_stats(request: web.Request) -> web.Response:
    """The counters."""
    return _json(request.app[STATE].stats())


async def post_reset(request: web.Request) -> web.Response:
    """Clear log, counters and spend."""
    state = request.app[STATE]
    state.reset()
    return _json(state.stats())


def add_routes(app: web.Application) -> None:
    """Register the control routes."""
    app.router.add_get("/_control", get_control)
    app.router.add_post("/_control", post_control)
    app.router.add_get("/_log", get_log)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_reset", post_reset)
