"""What a person sees in a terminal: the bar through a Retry-After wait, an interrupt, a resume (§11)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import shlex
import signal
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path

from pipeline.fake_server import FakeServer
from pipeline.fake_server.state import ServerState
from tests.acceptance.conftest import command_env, manifest_for, succeeded

#: retry waits at half their length: the fake server's Retry-After of 2 s becomes a visible 1 s wait
WAIT_SCALE = "0.5"
ROWS, COLUMNS = 40, 200


class Terminal:
    """An `ideobatch` command in a pseudo-terminal; what it draws is read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self._master = master
        self._screen = bytearray()
        self._changed = asyncio.Event()
        self._closed = False
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    async def start(cls, *args: str, cwd: Path) -> Terminal:
        """Start `ideobatch ARGS` with a terminal as its stdin, stdout and stderr."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = command_env()
        env["IDEOBATCH_TESTING_WAIT_SCALE"] = WAIT_SCALE
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pipeline.cli",
                *args,
                cwd=cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
            )
        finally:
            os.close(slave)
        return cls(process, master)

    def _read(self) -> None:
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the command has exited and closed the terminal
            chunk = b""
        if chunk:
            self._screen += chunk
        else:
            self._close()
        self._changed.set()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)

    @property
    def text(self) -> str:
        """Everything drawn so far, each carriage return (a redrawn bar) as a new line."""
        return self._screen.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")

    async def wait_for(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        """Wait until ``pattern`` has been drawn; returns its first match."""
        async with asyncio.timeout(timeout_s):
            while True:
                found = re.search(pattern, self.text)
                if found:
                    return found
                if self._closed:
                    raise AssertionError(f"{pattern!r} never appeared:\n{self.text}")
                self._changed.clear()
                await self._changed.wait()

    async def finish(self, timeout_s: float = 60) -> int:
        """Wait for the command to exit and its last output to be read; returns the exit code."""
        async with asyncio.timeout(timeout_s):
            code = await self.process.wait()
            while not self._closed:
                self._changed.clear()
                await self._changed.wait()
        return code

    def last_line(self) -> str:
        """The last line that is not blank."""
        return [line for line in self.text.splitlines() if line.strip()][-1].strip()


def hold_once_billed(count: int) -> Callable[[ServerState], bool]:
    """A fake-server predicate that holds every later call at the gate once ``count`` calls are billed."""

    def predicate(state: ServerState) -> bool:
        if state.stats()["billed"] >= count:
            state.hold()
            return True
        return False

    return predicate


async def test_bar_shows_waits_retries_resume_and_the_resume_command(
    tmp_path: Path, server: FakeServer
) -> None:
    """A 429 wait shows `waiting=N (429, 1s)`, `retried=`; SIGINT ends with a resume command that works."""
    server.set_faults(rate_429=1.0, retry_after_s=2)
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompt: terminal\n    repeat: 6\n",
        extra="limits:\n  concurrency: 2\n",
    )
    args = ("run", str(manifest), "--ledger", f"sqlite:///{tmp_path}/ledger.db")
    first = await Terminal.start(*args, cwd=tmp_path)
    waiting = await first.wait_for(r"waiting=(\d+) \(429, (\d+)s\)")
    assert int(waiting[1]) >= 1
    assert 1 <= int(waiting[2]) <= 2
    await first.wait_for(r"retried=[1-9]")

    held = asyncio.create_task(server.state.wait_until(hold_once_billed(2), timeout_s=30))
    server.set_faults(rate_429=0.0)
    await held
    first.process.send_signal(signal.SIGINT)
    await first.wait_for("SIGINT: finishing the calls in flight")
    server.state.release()
    assert await first.finish() == 3
    assert first.last_line() == f"interrupted: resume with: {shlex.join(['ideobatch', *args])}"
    done = succeeded(tmp_path)
    assert 2 <= done < 6

    resume = shlex.split(first.last_line().removeprefix("interrupted: resume with: "))
    second = await Terminal.start(*resume[1:], cwd=tmp_path)
    assert await second.finish() == 0
    bars = re.findall(r"\b(\d)/6\b.*spend=\$(\d+\.\d\d)", second.text)
    assert bars[0] == (str(done), f"{done * 0.08:.2f}"), second.text
    assert bars[-1] == ("6", "0.48")
    assert succeeded(tmp_path) == 6
