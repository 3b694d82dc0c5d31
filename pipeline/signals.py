"""Two-stage shutdown: the first SIGINT/SIGTERM stops claiming, the second cancels.

After the first signal the run lets in-flight calls and downloads finish and
writes its summary; after the second it cancels them, and their jobs go back
to pending (their unanswered attempts are counted in doubt).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

log = logging.getLogger("ideobatch")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown:
    """Stop requests from signals (or from code), in two stages."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.cancel = asyncio.Event()
        self.signal_name: str | None = None
        self._on_cancel: list[Callable[[], None]] = []
        self._on_request: list[Callable[[str], None]] = []

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.stop.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the second stage (cancel) is reached."""
        self._on_cancel.append(callback)

    def on_request(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with the signal's name on every request (both stages)."""
        self._on_request.append(callback)

    def request(self, name: str = "stop") -> None:
        """First call: stop claiming; second call: cancel in-flight work."""
        for forward in self._on_request:
            forward(name)
        if not self.stop.is_set():
            self.signal_name = name
            self.stop.set()
            log.warning("%s: finishing the calls in flight (send it again to cancel them)", name)
            return
        if not self.cancel.is_set():
            self.cancel.set()
            log.warning("%s again: cancelling the calls in flight; their jobs stay pending", name)
            for callback in self._on_cancel:
                callback()

    def install(self) -> None:
        """Route SIGINT and SIGTERM to `request` (on the running loop)."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.request, signal.Signals(sig).name)

    def uninstall(self) -> None:
        """Give the signals back to their default handlers."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
