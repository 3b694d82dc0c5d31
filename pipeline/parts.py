"""`ideobatch run --processes N`: one run spread over N processes of this machine, on one ledger.

The command's process starts N-1 hidden `ideobatch run-part` processes at
once, each in a session of its own (a Ctrl-C typed at the terminal reaches
the parent only), so that they load while it plans; each waits for a ``go``
line on its stdin, sent once the plan is complete (stdin closed without it:
the process ends having done nothing). It plans the manifest and works on it
like any run; the others claim jobs of the same manifest from the same ledger with
the settings the plan stored there, and so share the provider account's cap
on images in flight through the ledger (`pipeline.account_slots`), as
`worker` processes do. The parent forwards each SIGINT/SIGTERM it gets to
them (the first drains every process, the second cancels every process),
shows the one progress display (the others' jobs read from the ledger), and
prints the one summary: the ledger's counts, with this run's figures summed
over the processes, each of which reports its own as one JSON line on its
stdout when it ends. The exit code is the worst of the processes'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline import logs
from pipeline.exit_codes import EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK, EXIT_UNUSABLE
from pipeline.results import RunTally
from pipeline.signals import Shutdown

log = logging.getLogger("ideobatch")

#: the hidden command each further process runs
PART_COMMAND = "run-part"
#: which exit code wins when the processes of a run end differently
EXIT_PRECEDENCE = (EXIT_UNUSABLE, EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK)


def worst(codes: list[int]) -> int:
    """The exit code that says the most: 5 before 3 before 1 before 0 (an unknown code as 3)."""
    known = [code if code in EXIT_PRECEDENCE else EXIT_ABORTED for code in codes]
    return next((code for code in EXIT_PRECEDENCE if code in known), EXIT_OK)


@dataclass
class PartReport:
    """How one further process ended: its exit code and its tally (None if it said nothing)."""

    code: int
    tally: RunTally | None


def tally_json(tally: RunTally) -> dict[str, Any]:
    """A tally as the JSON a part prints."""
    return asdict(tally)


def tally_of(data: dict[str, Any]) -> RunTally:
    """A tally read back from a part's JSON (unknown keys ignored)."""
    names = set(RunTally.__dataclass_fields__)
    return RunTally(**{key: value for key, value in data.items() if key in names})


def merge(into: RunTally, other: RunTally) -> None:
    """Add ``other``'s counts to ``into``."""
    for name in RunTally.__dataclass_fields__:
        mine, theirs = getattr(into, name), getattr(other, name)
        if isinstance(mine, dict):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        elif isinstance(mine, list):
            mine.extend(theirs)
        else:
            setattr(into, name, mine + theirs)


@dataclass
class Parts:
    """The further processes of one run: started once its plan is complete, signalled, waited for."""

    count: int
    ledger_url: str
    manifest: str
    lease_s: float
    ledger_retry_s: float | None = None
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    _signals: list[str] = field(default_factory=list)
    _released: bool = False

    def command(self) -> list[str]:
        """The command line of one part.

        Neither the key nor the ledger URL (which may hold a password) is on
        it, for `ps` to show: the key stays in its variable, the URL goes in
        the part's ``IDEOBATCH_LEDGER``.
        """
        args = [sys.executable, "-m", "pipeline.cli", PART_COMMAND, "--manifest-name", self.manifest]
        args += ["--lease-s", repr(self.lease_s), "--quiet"]
        if self.ledger_retry_s is not None:
            args += ["--ledger-retry-s", repr(self.ledger_retry_s)]
        args += ["--log-format", "json" if logs.is_json() else "text"]
        for handler in log.handlers:  # their warnings and errors go to the run's log file too
            if isinstance(handler, logging.FileHandler):
                args += ["--log-file", handler.baseFilename]
        return args

    async def spawn(self) -> None:
        """Start the parts: they load, then wait for `release`."""
        for _ in range(self.count):
            process = await asyncio.create_subprocess_exec(
                *self.command(),
                env={**os.environ, "IDEOBATCH_LEDGER": self.ledger_url},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C reaches the parent, which forwards it
            )
            self.processes.append(process)

    def _tell(self, go: bool) -> None:
        for process in self.processes:
            if process.stdin is not None and not process.stdin.is_closing():
                with contextlib.suppress(OSError):
                    if go:
                        process.stdin.write(b"go\n")
                    process.stdin.close()

    def release(self) -> None:
        """Let the parts work (the plan is complete in the ledger)."""
        if self._released or self._signals:
            return
        self._released = True
        self._tell(go=True)
        log.info("working in %d processes", len(self.processes) + 1)

    def hold_back(self) -> None:
        """Tell parts not yet released to end without working."""
        if not self._released:
            self._tell(go=False)

    async def release_when_planned(self, planning: asyncio.Task[Any] | None) -> None:
        """Release the parts once the plan beside the run is complete; hold them back if it fails."""
        if planning is not None:
            await asyncio.wait({planning})
            if planning.cancelled() or planning.exception() is not None:
                self.hold_back()
                return
        self.release()

    def forward(self, name: str) -> None:
        """Send the parts the signal this process got (SIGINT or SIGTERM; another name: SIGINT).

        Parts not yet released are held back instead: they end without working.
        """
        self._signals.append(name)
        if not self._released:
            self.hold_back()
            return
        number = signal.SIGTERM if name == "SIGTERM" else signal.SIGINT
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(number)

    async def wait(self) -> list[PartReport]:
        """Wait for every part to end (those not released are held back); their exit codes and tallies."""
        self.hold_back()
        reports = []
        for process in self.processes:
            out, _err = await process.communicate()
            code = process.returncode if process.returncode is not None else EXIT_ABORTED
            tally = None
            for line in reversed(out.decode(errors="replace").splitlines()):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    tally = tally_of(json.loads(line)["tally"])
                    break
            if tally is None:
                log.error("a process of this run ended (exit %s) without reporting its jobs", code)
            reports.append(PartReport(code if code >= 0 else EXIT_ABORTED, tally))
        return reports

    async def stop(self) -> None:
        """Drain the parts (SIGTERM; hold back those not released) and wait: the parent is going away."""
        self.forward("SIGTERM")
        with contextlib.suppress(Exception):
            await self.wait()


#: seconds between two looks at whether the run's process is still there
PARENT_POLL_S = 0.5


async def _drain_when_orphaned(shutdown: Shutdown, parent: int) -> None:
    """Drain (as on a first Ctrl-C) if the run's process dies: nobody would show or sum our work."""
    while True:
        await asyncio.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            shutdown.request("the run's process ended")
            return


async def run_part(
    ledger_url: str, manifest: str, *, lease_s: float, ledger_retry_s: float | None
) -> tuple[int, dict[str, Any]]:
    """One further process of a run: work on the manifest's jobs; its exit code and its report."""
    from pipeline.errors import UsageError
    from pipeline.ledger.repository import opened_ledger
    from pipeline.running import RunOptions, execute_and_summarize, new_owner
    from pipeline.settings import RunSettings
    from pipeline.summary import exit_code

    # the parent's signals are handled from the start: one that came before its run is registered
    # would otherwise interrupt it anywhere
    shutdown = Shutdown()
    shutdown.install()
    orphaned = asyncio.create_task(_drain_when_orphaned(shutdown, os.getppid()), name="parent-watch")
    try:
        async with opened_ledger(ledger_url, retry_window_s=ledger_retry_s) as ledger:
            record = await ledger.get_manifest(manifest)
            if record is None:
                raise UsageError(f"the ledger has no manifest {manifest!r}")
            settings = RunSettings.from_config(record.config)
            api_key = settings.api_key()
            logs.redact(api_key)
            options = RunOptions(manifest="", ledger_url=ledger_url, quiet=True, lease_s=lease_s)
            with logs.manifest_context(settings.name):
                result, summary = await execute_and_summarize(
                    ledger,
                    new_owner(),
                    options,
                    record=record,
                    settings=settings,
                    api_key=api_key,
                    shutdown=shutdown,
                )
    finally:
        orphaned.cancel()
        shutdown.uninstall()
    report = {"tally": tally_json(result.tally), "stop_reason": result.stop_reason}
    return exit_code(summary, result), report
