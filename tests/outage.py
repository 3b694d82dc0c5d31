"""A TCP relay in front of the test PostgreSQL, to take the ledger away and bring it back.

Stopping the shared PostgreSQL server would break every other test running at
the same time; a relay on a loopback port of its own does to one test's
ledger what a restart or a network cut does: `cut()` resets every open
connection and refuses new ones (the port stays bound, so nobody else takes
it), `restore()` lets connections through again. The database is the real
one throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from sqlalchemy import make_url

_LINGER_OFF = struct.pack("ii", 1, 0)


class Outage:
    """Relays 127.0.0.1:``port`` to the server of ``url``; `cut` and `restore` it."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self._target = (parsed.host or "127.0.0.1", parsed.port or 5432)
        self._url = parsed
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.down = False
        self.port = 0
        #: when connections were refused while the relay was cut (monotonic seconds)
        self.refused_at: list[float] = []
        self._knocked = asyncio.Event()

    @property
    def url(self) -> str:
        """The ledger URL through the relay."""
        return self._url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        """Reset every relayed connection; new ones are reset as they arrive."""
        self.down = True
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def refused_for(self, seconds: float, timeout_s: float = 30) -> None:
        """Wait until clients have been knocking at the cut relay for ``seconds`` and still are."""
        async with asyncio.timeout(timeout_s):
            while not self.refused_at or self.refused_at[-1] - self.refused_at[0] < seconds:
                self._knocked.clear()
                await self._knocked.wait()

    def restore(self) -> None:
        """Let connections through again."""
        self.down = False

    async def close(self) -> None:
        """Stop listening and drop everything."""
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused_at.append(asyncio.get_running_loop().time())
            self._knocked.set()
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(writer)
            return
        self._open |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            self._open -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.down:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
    writer.transport.abort()
