"""How responses leave the fake server: whole, in pieces, or slowly.

``split_writes`` (a share of responses, like the other rates) sends a response
as pieces cut at random byte boundaries — the status line and headers, then
the body, the first pieces a few bytes long (`ServerState.piece_sizes`) —
each flushed on its own after a short pause, so that the client's reads see
headers in parts and a body a few bytes at a time, as behind a fragmenting
proxy. ``trickle_bps`` sends bodies at that many bytes per second.

Both apply, through one middleware, to every response a route returns
except the control routes' (so: API answers, error bodies, image URLs,
sample sources; an HTTP error raised rather than returned, such as a 404 for
an unknown path, goes out whole). The middleware writes the response itself
on the transport (``Connection: close``), then closes the connection; aiohttp
then fails to write the response the middleware returns and treats that as a
client that went away, as for the faults of `pipeline.fake_server.transport`.
Responses a handler has already sent (truncation) or abandoned (reset) are
left as they are.
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from pipeline.fake_server.state import STATE

#: the pause after each piece of a split write (long enough for the client to read it alone)
PIECE_PAUSE_S = 0.001
#: a trickled body goes out in pieces of this many seconds' worth of bytes
TRICKLE_TICK_S = 0.02
CONTROL_PATHS = ("/_control", "/_log", "/_stats", "/_reset")


@web.middleware
async def delivery(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send the handler's response in pieces or slowly, when the config says so."""
    response = await handler(request)
    state = request.app[STATE]
    cfg = state.config
    if not (cfg.split_writes or cfg.trickle_bps) or request.path.startswith(CONTROL_PATHS):
        return response
    transport = request.transport
    if not isinstance(response, web.Response) or response.prepared:
        return response
    if transport is None or transport.is_closing():
        return response
    split = state.chance(cfg.split_writes)
    if not split and not cfg.trickle_bps:
        return response
    state.count_fault("split_writes" if split else "trickle")
    await request.app.on_response_prepare.send(request, response)
    head, body = serialized(request, response)
    pieces = _pieces(head, state.piece_sizes(len(head)) if split else [len(head)], PIECE_PAUSE_S)
    if cfg.trickle_bps:
        step = max(1, int(cfg.trickle_bps * TRICKLE_TICK_S))
        pieces += _pieces(body, _even(len(body), step), step / cfg.trickle_bps)
    elif split:
        pieces += _pieces(body, state.piece_sizes(len(body)), PIECE_PAUSE_S)
    else:
        pieces += [(body, 0.0)]
    for piece, pause in pieces:
        if transport.is_closing():  # the client went away
            break
        transport.write(piece)
        if pause:
            await asyncio.sleep(pause)
    transport.close()  # after what was written is flushed
    return web.Response()


def serialized(request: web.BaseRequest, response: web.Response) -> tuple[bytes, bytes]:
    """The status line and headers of ``response``, and its body, as HTTP/1.1 bytes."""
    body = response.body if isinstance(response.body, bytes) else b""
    headers = CIMultiDict(response.headers)
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    headers.setdefault("Content-Type", "application/octet-stream")
    headers.setdefault("Date", formatdate(usegmt=True))
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head, b"" if request.method == "HEAD" else body


def _even(length: int, step: int) -> list[int]:
    return [min(step, length - start) for start in range(0, length, step)]


def _pieces(data: bytes, sizes: list[int], pause: float) -> list[tuple[bytes, float]]:
    pieces = []
    start = 0
    for size in sizes:
        pieces.append((data[start : start + size], pause))
        start += size
    return pieces
