"""GET routes that serve bytes: signed image URLs, and sample assets for tests.

Image URLs answer like a signed CDN link: 403 with an XML ``AccessDenied`` body
once expired or when the signature is wrong. Download faults (latency, reset,
an HTML page with status 200, a truncated body, oversize garbage, a redirect
elsewhere) apply here; split and slow writes apply to every route
(`pipeline.fake_server.delivery`).
``/_assets/sample/{name}.{png|jpg|webp}?w=&h=[&pad=]`` serves deterministic
source images that never expire (``pad`` appends bytes after the image, to make
a valid-looking file over a size cap); ``/_assets/bytes/{n}`` serves n bytes
that are not an image.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from datetime import UTC, datetime

from aiohttp import web

from pipeline.fake_server.images import MAX_SAMPLE_SIDE, PNG_SIGNATURE, ImageFormat, render_image
from pipeline.fake_server.images import render_sample as _render_sample
from pipeline.fake_server.state import STATE, ServerState
from pipeline.fake_server.transport import reset_connection, send_truncated
from pipeline.fake_server.urls import Verdict

IMAGE_ROUTE = "/api/images/ephemeral/{token:[A-Za-z0-9_-]+}.png"
SAMPLE_ROUTE = "/_assets/sample/{name}.{ext:png|jpg|jpeg|webp}"
BYTES_ROUTE = r"/_assets/bytes/{n:\d+}"
MAX_ASSET_BYTES = 64 * 1024 * 1024
_DEFAULT_SAMPLE_SIDE = 256
_FORMATS: dict[str, ImageFormat] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
_NOT_AN_IMAGE = b"this is not an image, just bytes. "
_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    "<body><p>Checking your browser before accessing the image.</p></body></html>"
)


def decompression_bomb(side: int = 12_000) -> bytes:
    """A valid, tiny PNG whose header claims ``side`` x ``side`` pixels (144 M: a decompression bomb
    that Pillow only warns about)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (1 + side // 8) * 64, 9)  # the first rows; enough to look real
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _access_denied(message: str, state: ServerState, expires: str | None = None) -> web.Response:
    extra = ""
    if expires is not None:
        server_time = datetime.fromtimestamp(state.now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        extra = f"<Expires>{expires}</Expires><ServerTime>{server_time}</ServerTime>"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>AccessDenied</Code><Message>{message}</Message>{extra}</Error>"
    )
    return web.Response(text=xml, status=403, content_type="application/xml")


async def image(request: web.Request) -> web.StreamResponse:
    """GET of a signed image URL."""
    state = request.app[STATE]
    cfg = state.config
    exp, sig = request.query.get("exp"), request.query.get("sig")
    if not exp or not sig:
        state.record_download(served=False, fault="url_unsigned")
        return _access_denied("Query-string authentication requires exp and sig", state)
    verdict, spec = state.signer.check(request.match_info["token"], exp, sig, state.now())
    if verdict is Verdict.BAD_SIGNATURE or spec is None:
        state.record_download(served=False, fault="url_bad_signature")
        return _access_denied("Access denied: the signature does not match", state)
    if verdict is Verdict.EXPIRED:
        state.record_download(served=False, fault="url_expired")
        when = datetime.fromtimestamp(int(exp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _access_denied("Request has expired", state, expires=when)
    if cfg.download_latency_ms > 0:
        await asyncio.sleep(cfg.download_latency_ms / 1000)
    if cfg.download_redirect_url:
        state.record_download(served=False, fault="download_redirect")
        return web.Response(status=302, headers={"Location": cfg.download_redirect_url})
    if state.chance(cfg.rate_download_reset):
        state.record_download(served=False, fault="download_reset")
        return reset_connection(request)
    if state.chance(cfg.rate_download_html):
        state.record_download(served=False, fault="download_html")
        return web.Response(text=_HTML_PAGE, content_type="text/html")
    if state.chance(cfg.rate_download_bomb):
        state.record_download(served=False, fault="download_bomb")
        return web.Response(body=decompression_bomb(), content_type="image/png")
    if cfg.download_oversize_bytes > 0:
        state.record_download(served=False, fault="download_oversize")
        body = PNG_SIGNATURE + bytes(cfg.download_oversize_bytes)
        return web.Response(body=body, content_type="image/png")
    response = web.Response(
        body=render_image(spec.seed, spec.width, spec.height, spec.variant),
        content_type="image/png",
        headers={"Cache-Control": "private, max-age=86400"},
    )
    if state.chance(cfg.rate_download_truncate):
        state.record_download(served=False, fault="download_truncate")
        return await send_truncated(request, response)
    state.record_download(served=True)
    return response


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be between {low} and {high}")
    return value


async def sample(request: web.Request) -> web.Response:
    """GET of a deterministic sample source image."""
    width = _int_query(request, "w", _DEFAULT_SAMPLE_SIDE, 1, MAX_SAMPLE_SIDE)
    height = _int_query(request, "h", _DEFAULT_SAMPLE_SIDE, 1, MAX_SAMPLE_SIDE)
    pad = _int_query(request, "pad", 0, 0, MAX_ASSET_BYTES)
    fmt = _FORMATS[request.match_info["ext"]]
    body = _render_sample(request.match_info["name"], width, height, fmt)
    if pad:
        body += bytes(pad)
    return web.Response(body=body, content_type=f"image/{fmt}")


async def not_an_image(request: web.Request) -> web.Response:
    """GET of n bytes that are no image."""
    size = int(request.match_info["n"])
    if size > MAX_ASSET_BYTES:
        raise web.HTTPBadRequest(text=f"at most {MAX_ASSET_BYTES} bytes")
    body = (_NOT_AN_IMAGE * (size // len(_NOT_AN_IMAGE) + 1))[:size]
    return web.Response(body=body, content_type="application/octet-stream")


def add_routes(app: web.Application) -> None:
    """Register the GET routes of this module."""
    app.router.add_get(IMAGE_ROUTE, image)
    app.router.add_get(SAMPLE_ROUTE, sample)
    app.router.add_get(BYTES_ROUTE, not_an_image)
