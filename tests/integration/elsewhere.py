"""A second tiny HTTP server on another 127.0.0.1 port: where test redirects lead.

``/moved.png`` serves a PNG of its own, ``/to?url=U`` answers 302 to ``U``,
``/loop`` redirects to itself, any POST answers 307 to ``post_target``; every
request is counted by path, so a test can assert that a refused redirect
never reached it.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from aiohttp import web

from pipeline.fake_server.images import render_sample

MOVED_PNG = render_sample("moved", 40, 30, "png")


class Elsewhere:
    """The second server, as an async context manager; `url` is its base URL."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.url = ""
        #: where a POST is sent on (307: the client would repeat the POST, body and headers)
        self.post_target = ""
        app = web.Application()
        app.router.add_get("/moved.png", self._moved)
        app.router.add_get("/to", self._to)
        app.router.add_get("/loop", self._loop)
        app.router.add_post("/{tail:.*}", self._post)
        self._runner = web.AppRunner(app, access_log=None)

    async def _moved(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(body=MOVED_PNG, content_type="image/png")

    async def _to(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(status=302, headers={"Location": request.query["url"]})

    async def _loop(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(status=302, headers={"Location": "/loop"})

    async def _post(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        return web.Response(status=307, headers={"Location": self.post_target + request.path})

    @property
    def total(self) -> int:
        """Requests received, all paths together."""
        return sum(self.hits.values())

    async def __aenter__(self) -> Elsewhere:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._runner.cleanup()
