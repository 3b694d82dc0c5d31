"""`FakeServer`: the application bound to a real socket, as an async context manager.

``async with FakeServer(FaultConfig(...)) as server:`` listens on 127.0.0.1 (a
free port by default) until the block ends; ``server.url`` is the base URL of
both dialects (native at ``/generate``..., proxy at ``/ideogram/generate``...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from pipeline.fake_server.app import create_app
from pipeline.fake_server.config import FaultConfig
from pipeline.fake_server.state import ServerState

DEFAULT_HOST = "127.0.0.1"
#: how long stopping waits for calls still being handled
SHUTDOWN_TIMEOUT_S = 2.0


class FakeServer:
    """A running fake Ideogram server."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = ServerState(config or FaultConfig(), clock=clock)
        self.app = create_app(state=self.state)
        self.host = host
        self.port = port
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and start serving; `url` and `port` then name the real port."""
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handler_cancellation=False,  # a call abandoned by its client is still billed
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.url = f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving, letting held calls finish."""
        self.state.release()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def config(self) -> FaultConfig:
        """The fault config in force."""
        return self.state.config

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change faults at runtime (ValueError if a value is bad)."""
        return self.state.set_faults(**changes)

    def reset(self) -> None:
        """Clear the log and counters, restore the configured balance."""
        self.state.reset()
