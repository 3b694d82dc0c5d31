"""Progress on stderr: a tqdm bar on a terminal, periodic log lines otherwise (SPEC §7, §11).

The bar counts the manifest's whole progress: a resumed run starts at the
jobs and spend the ledger already has. ``retried=`` counts this run's
retries; ``waiting=N (429, 12s)`` shows the jobs waiting out a Retry-After
or a backoff, their most common reason and the longest wait left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # imported when a bar is shown (not with --quiet, nor off a terminal)
    from tqdm import tqdm

from pipeline.ledger.records import to_usd
from pipeline.results import RunTally

log = logging.getLogger("ideobatch")

#: seconds between log lines when there is no terminal (or with --quiet)
LOG_INTERVAL_S = 10.0
#: seconds between redraws of the bar while nothing happens (a wait counts down)
BAR_REFRESH_S = 0.5


@dataclass(frozen=True)
class Baseline:
    """What the ledger had done for the manifest before this run started."""

    total: int = 0
    done: int = 0
    failed: int = 0
    spend_micros: int = 0


class Progress:
    """Shows done, failed, retried, waiting, rate, ETA and spend as a run goes."""

    def __init__(
        self,
        total: int,
        *,
        label: str,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval_s: float = LOG_INTERVAL_S,
        baseline: Baseline | None = None,
        bar: bool | None = None,
    ) -> None:
        self.tally = RunTally()
        self.baseline = baseline or Baseline(total=total)
        self.total = max(total, self.baseline.total)
        self.label = label
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._started = time.monotonic()
        self._last_log = self._started
        self._bar: tqdm[Any] | None = None
        #: what the run's other processes (`run --processes N`) finished, as the ledger says
        self.others = Baseline()
        #: job key -> (reason shown, monotonic time its wait ends)
        self._waiting: dict[str, tuple[str, float]] = {}
        self._idle_until: float | None = None
        show_bar = (not quiet and self.stream.isatty()) if bar is None else bar
        if show_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.baseline.done,
                file=self.stream,
                unit="job",
                dynamic_ncols=True,
                desc=label,
                smoothing=0.1,
            )
            self._draw()

    @property
    def done(self) -> int:
        """Jobs finished (either way) in this run."""
        return self.tally.succeeded + self.tally.failed

    @property
    def done_overall(self) -> int:
        """Jobs of the manifest finished, before and during this run (by all its processes)."""
        return self.baseline.done + self.done + self.others.done

    @property
    def failed_overall(self) -> int:
        """Jobs of the manifest failed, before and during this run (by all its processes)."""
        return self.baseline.failed + self.tally.failed + self.others.failed

    @property
    def spend_micros(self) -> int:
        """The manifest's spend: the ledger's before this run plus this run's."""
        return self.baseline.spend_micros + self.tally.spend_micros + self.others.spend_micros

    def note_ledger(self, done: int, failed: int, spend_micros: int) -> None:
        """The ledger's figures now: what is not this process's nor from before was done by the others."""
        self.others = Baseline(
            done=max(0, done - self.baseline.done - self.done),
            failed=max(0, failed - self.baseline.failed - self.tally.failed),
            spend_micros=max(0, spend_micros - self.baseline.spend_micros - self.tally.spend_micros),
        )
        self.update()

    def add_total(self, extra: int) -> None:
        """More jobs appeared (chained stages)."""
        self.total += extra
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def note_waiting(self, seconds: float) -> None:
        """Nothing is due for ``seconds`` (the soonest retry time in the ledger)."""
        self._idle_until = time.monotonic() + seconds

    def job_retrying(self, key: str, reason: str, seconds: float) -> None:
        """A job is tried again in ``seconds`` after an error shown as ``reason`` (``429``, ``timeout``)."""
        self._waiting[key] = (reason, time.monotonic() + seconds)
        self._draw()

    def job_claimed(self, key: str) -> None:
        """A job is being worked on (no longer waiting)."""
        self._waiting.pop(key, None)

    def waiting(self) -> tuple[int, str | None, float]:
        """Jobs still waiting, their most common reason, and the longest wait left in seconds."""
        now = time.monotonic()
        for key in [k for k, (_reason, until) in self._waiting.items() if until <= now]:
            del self._waiting[key]
        if not self._waiting:
            return 0, None, 0.0
        reasons = Counter(reason for reason, _until in self._waiting.values())
        longest = max(until for _reason, until in self._waiting.values()) - now
        return len(self._waiting), reasons.most_common(1)[0][0], longest

    def counts(self) -> dict[str, Any]:
        """The numbers shown, for JSON log lines."""
        count, reason, longest = self.waiting()
        return {
            "done": self.done_overall,
            "total": self.total,
            "succeeded": self.tally.succeeded,
            "failed": self.failed_overall,
            "retried": self.tally.retried,
            "waiting": count,
            "waiting_reason": reason,
            "waiting_s": math.ceil(longest),
            "spend_usd": round(to_usd(self.spend_micros), 6),
        }

    def _postfix(self) -> dict[str, str | int]:
        count, reason, longest = self.waiting()
        postfix: dict[str, str | int] = {
            "failed": self.failed_overall,
            "retried": self.tally.retried,
        }
        if count:
            postfix["waiting"] = f"{count} ({reason}, {math.ceil(longest)}s)"
        elif self._idle_until is not None and self._idle_until > time.monotonic():
            postfix["next_try"] = f"{math.ceil(self._idle_until - time.monotonic())}s"
        postfix["spend"] = f"${to_usd(self.spend_micros):.2f}"
        return postfix

    def _draw(self) -> None:
        if self._bar is None:
            return
        self._bar.n = self.done_overall
        self._bar.set_postfix(self._postfix(), refresh=False)
        self._bar.refresh()

    def update(self) -> None:
        """A job changed state: refresh the bar, or log if a period has passed."""
        if self._bar is not None:
            self._draw()
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._log_line(now)

    def line(self) -> str:
        """One progress line: counts, rate, ETA and spend."""
        elapsed = max(1e-9, time.monotonic() - self._started)
        rate = (self.done + self.others.done) / elapsed
        left = max(0, self.total - self.done_overall)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        count, reason, longest = self.waiting()
        waiting = f", {count} waiting ({reason}, {math.ceil(longest)}s)" if count else ""
        return (
            f"{self.label}: {self.done_overall}/{self.total} done, "
            f"{self.failed_overall} failed, "
            f"{self.tally.retried} retried{waiting}, {rate:.1f} jobs/s, ETA {eta}, "
            f"spend ${to_usd(self.spend_micros):.2f}"
        )

    def _log_line(self, now: float) -> None:
        self._last_log = now
        log.info("%s", self.line(), extra={"event": "progress", "counts": self.counts()})

    async def run(self) -> None:
        """Redraw the bar (a wait counts down), or log a line every interval (cancel to stop)."""
        while True:
            if self._bar is not None:
                await asyncio.sleep(BAR_REFRESH_S)
                self._draw()
                continue
            await asyncio.sleep(self.interval_s)
            if self.done_overall < self.total:
                self._log_line(time.monotonic())

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._draw()
            self._bar.close()
