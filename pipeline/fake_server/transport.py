"""Connection-level faults: a reset with no answer, a body cut short.

Both leave aiohttp with a closed transport; the handler then returns a response
that aiohttp fails to write, which it treats as a client that went away (no
error is logged).
"""

from __future__ import annotations

import socket
import struct

from aiohttp import web

_LINGER_OFF = struct.pack("ii", 1, 0)


def reset_connection(request: web.BaseRequest) -> web.StreamResponse:
    """Abort the connection with a TCP RST, no status line sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # linger 0: close() sends RST instead of FIN, a real "connection reset by peer"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
        transport.abort()
    return web.Response()


async def send_truncated(
    request: web.BaseRequest, response: web.Response, *, keep: float = 0.5
) -> web.StreamResponse:
    """Send ``response``'s headers with its full Content-Length, part of its body, then close."""
    body = response.body if isinstance(response.body, bytes) else b""
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: int(len(body) * keep)])
    if request.transport is not None:
        request.transport.close()  # flushes what was written, then FIN
    return stream
