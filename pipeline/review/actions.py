"""The review's writes (only with ``--allow-actions``): picking images and retrying failed jobs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.ledger.tables import VERDICTS
from pipeline.reporting import retry_failed
from pipeline.review.state import STATE, path_id


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object\n")
    return body


async def pick(request: web.Request) -> web.Response:
    """POST /api/images/{image}/pick ``{"verdict": "picked" | "rejected" | null}``: record a verdict."""
    state = request.app[STATE]
    image_id = path_id(request, "image")
    verdict = (await _json_body(request)).get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise web.HTTPBadRequest(text=f"verdict must be one of {', '.join(VERDICTS)} or null\n")
    if not await state.ledger.set_pick(image_id, verdict):
        raise web.HTTPNotFound(text="no such image\n")
    return web.json_response({"image_id": image_id, "verdict": verdict})


async def retry(request: web.Request) -> web.Response:
    """POST /m/{manifest}/retry ``{"reason": R}``: what `ideobatch retry --reason R` does."""
    state = request.app[STATE]
    manifest_id = path_id(request, "manifest")
    await state.manifest_name(manifest_id)
    reason = (await _json_body(request)).get("reason")
    if not isinstance(reason, str) or not reason:
        raise web.HTTPBadRequest(text="say which failures to retry: a reason\n")
    count = await retry_failed(state.ledger, manifest_id, reason)
    return web.json_response({"manifest_id": manifest_id, "reason": reason, "retried": count})
