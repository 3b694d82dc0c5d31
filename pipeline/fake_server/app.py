"""The aiohttp application: routes of both dialects, image URLs, assets and control.

Every op of the endpoint catalog is served at its native path (``POST
/generate``...) and its proxy path (``POST /ideogram/generate``...). One
server answers both, so a test picks the dialect by path, as the runner does
by ``base_url``. The routes are read from the catalog when the app is made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from pipeline import endpoints
from pipeline.api_schema import MAX_SOURCE_BYTES
from pipeline.fake_server import control, downloads
from pipeline.fake_server.api import native_handler, proxy_handler
from pipeline.fake_server.config import FaultConfig
from pipeline.fake_server.delivery import delivery
from pipeline.fake_server.requests import FETCHER, SourceFetcher
from pipeline.fake_server.state import STATE, ServerState

SERVER_HEADER = "nginx"
#: room for a 10 MB image plus the rest of a multipart body
CLIENT_MAX_SIZE = MAX_SOURCE_BYTES + 1024 * 1024


def create_app(config: FaultConfig | None = None, *, state: ServerState | None = None) -> web.Application:
    """A fresh fake Ideogram application (give ``state`` to share or inspect it)."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[delivery])
    app[STATE] = state if state is not None else ServerState(config or FaultConfig())
    for ep in endpoints.CATALOG.values():
        app.router.add_post(ep.native_path, native_handler(ep))
        app.router.add_post(ep.proxy_path, proxy_handler(ep))
    downloads.add_routes(app)
    control.add_routes(app)
    app.cleanup_ctx.append(_source_fetcher)
    app.on_response_prepare.append(_server_header)
    return app


async def _server_header(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Hide aiohttp's banner: the real APIs sit behind a generic front end."""
    response.headers["Server"] = SERVER_HEADER


async def _source_fetcher(app: web.Application) -> AsyncIterator[None]:
    """The client session the proxy fetches ``image_file`` URLs with."""
    state = app[STATE]
    async with aiohttp.ClientSession() as session:
        app[FETCHER] = SourceFetcher(session, lambda: state.config.fetch_timeout_s)
        yield
