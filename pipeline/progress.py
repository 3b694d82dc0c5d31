"""Progress on stderr: a tqdm bar on a terminal, periodic log lines otherwise (SPEC §7)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from pipeline.ledger.records import to_usd
from pipeline.results import RunTally

log = logging.getLogger("ideobatch")

#: seconds between log lines when there is no terminal (or with --quiet)
LOG_INTERVAL_S = 10.0


class Progress:
    """Shows done, failed, retrying, rate, ETA and spend as a run goes."""

    def __init__(
        self,
        total: int,
        *,
        label: str,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self.tally = RunTally()
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._started = time.monotonic()
        self._last_log = self._started
        self._bar: tqdm[Any] | None = None
        self._waiting_s: float | None = None
        if not quiet and self.stream.isatty():
            self._bar = tqdm(
                total=total,
                file=self.stream,
                unit="job",
                dynamic_ncols=True,
                desc=label,
                smoothing=0.1,
            )

    @property
    def done(self) -> int:
        """Jobs finished (either way) in this run."""
        return self.tally.succeeded + self.tally.failed

    def add_total(self, extra: int) -> None:
        """More jobs appeared (chained stages)."""
        self.total += extra
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def note_waiting(self, seconds: float) -> None:
        """Nothing is due for ``seconds`` (jobs wait for their retry time)."""
        self._waiting_s = seconds

    def update(self) -> None:
        """A job changed state: refresh the bar, or log if a period has passed."""
        tally = self.tally
        if self._bar is not None:
            self._bar.n = self.done
            self._bar.set_postfix(
                failed=tally.failed,
                retrying=tally.retried,
                spend=f"${to_usd(tally.spend_micros):.2f}",
                refresh=False,
            )
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info("%s", self.line())

    def line(self) -> str:
        """One progress line: counts, rate, ETA and spend."""
        tally = self.tally
        elapsed = max(1e-9, time.monotonic() - self._started)
        rate = self.done / elapsed
        left = max(0, self.total - self.done)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        return (
            f"{self.label}: {self.done}/{self.total} done, {tally.failed} failed, "
            f"{tally.retried} retried, {rate:.1f} jobs/s, ETA {eta}, "
            f"spend ${to_usd(tally.spend_micros):.2f}"
        )

    async def run(self) -> None:
        """Log a line every interval when there is no bar (cancel to stop)."""
        while True:
            await asyncio.sleep(self.interval_s)
            if self._bar is None and self.done < self.total:
                log.info("%s", self.line())
                self._last_log = time.monotonic()
            elif self._bar is not None:
                self._bar.refresh()

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.n = self.done
            self._bar.close()
