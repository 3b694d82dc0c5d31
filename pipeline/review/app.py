"""`ideobatch serve`: the review server's routes, and running it until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import LedgerError, UsageError
from pipeline.ledger.engine import async_url
from pipeline.ledger.faults import describe, masked
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.review import actions, media, metrics, pages
from pipeline.review.security import Handler, check_bind, guard, secure_headers
from pipeline.review.state import STATE, ReviewOptions, ReviewState

log = logging.getLogger("ideobatch")
#: a page waits this long for a ledger that does not answer, then is answered 503 with Retry-After
LEDGER_WAIT_S = 5.0

__all__ = ["ReviewOptions", "create_app", "serve_forever"]


@web.middleware
async def ledger_trouble(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A ledger that does not answer is a 503 the page can retry, not a 500 and a traceback."""
    try:
        return await handler(request)
    except (LedgerError, SQLAlchemyError) as exc:
        log.warning(
            "review: the ledger did not answer %s %s: %s", request.method, request.path, describe(exc)
        )
        raise web.HTTPServiceUnavailable(
            text="the ledger does not answer just now: try again in a moment\n", headers={"Retry-After": "5"}
        ) from None


def create_app(ledger: Ledger, options: ReviewOptions) -> web.Application:
    """The review application over an opened ledger (the caller closes the ledger)."""
    app = web.Application(middlewares=[guard, ledger_trouble], client_max_size=64 * 1024)
    state = ReviewState(ledger, options)
    app[STATE] = state
    app.on_response_prepare.append(secure_headers)
    app.on_startup.append(_warm_up)
    app.on_cleanup.append(_stop_warm_up)
    app.add_routes(
        [
            web.get("/", pages.overview_page),
            web.get("/live", pages.overview_fragment),
            web.get("/api/overview", pages.overview_json),
            web.get(r"/m/{manifest}", pages.gallery_page),
            web.get(r"/m/{manifest}/images/{image}", pages.detail_page),
            web.get(r"/m/{manifest}/failures", pages.failures_page),
            web.post(r"/m/{manifest}/retry", actions.retry),
            web.post(r"/api/images/{image}/pick", actions.pick),
            web.get("/metrics", metrics.metrics),
            web.get(r"/static/{name}", pages.static_file),
            web.get(r"/files/{manifest}/{path:.+}", media.serve_file),
            web.get(r"/thumbs/{image}", media.serve_thumb),
            web.get(r"/sources/{job}", media.serve_source),
        ]
    )
    return app


_WARMING: web.AppKey[asyncio.Task[None]] = web.AppKey("warming", asyncio.Task)


async def _warm_up(app: web.Application) -> None:
    """Read every manifest's field summary in the background, so the first gallery page is quick."""
    state = app[STATE]

    async def warm() -> None:
        for record in await state.ledger.list_manifests():
            await state.fields.summary(record.id)

    app[_WARMING] = asyncio.create_task(warm(), name="warm-field-summaries")


async def _stop_warm_up(app: web.Application) -> None:
    task = app[_WARMING]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def serve_forever(options: ReviewOptions, ready: asyncio.Event | None = None) -> None:
    """Serve the review of ``options.ledger_url`` until SIGINT or SIGTERM."""
    problem = check_bind(options.host, options.token)
    if problem is not None:
        raise UsageError(problem)
    target = async_url(options.ledger_url)
    if target.get_backend_name() == "sqlite" and not Path(str(target.database)).expanduser().exists():
        # reviewing never creates a ledger: a wrong path would show an empty one
        raise UsageError(f"there is no ledger at {target.database}: run a manifest first, or give --ledger")
    async with opened_ledger(options.ledger_url, create=False, retry_window_s=LEDGER_WAIT_S) as ledger:
        runner = web.AppRunner(create_app(ledger, options), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, options.host, options.port)
            try:
                await site.start()
            except OSError as exc:
                raise UsageError(f"cannot listen on {options.host}:{options.port}: {exc.strerror}") from exc
            host, port = _bound(runner)
            address = f"http://{host}:{port}/"
            shown = f"{address}?token=…" if options.token else address
            mode = "picks and retries allowed" if options.allow_actions else "read-only"
            log.info("reviewing %s at %s (%s)", masked(options.ledger_url), shown, mode)
            # stdout: the address, for scripts that start the server on port 0
            print(address, flush=True)
            if ready is not None:
                ready.set()
            await _until_stopped()
        finally:
            await runner.cleanup()


def _bound(runner: web.AppRunner) -> tuple[str, int]:
    host, port = runner.addresses[0][:2]
    return (f"[{host}]" if ":" in host else host), int(port)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
