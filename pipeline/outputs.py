"""Writing image files into the output folder: inside it at the moment of writing, or not at all.

`pipeline.naming` checks a path when it is rendered, with real paths cached
for the run; a folder can be swapped for a symlink after that. So every
write opens the image's folder first, checks that what it opened is a folder
whose real path is inside the real output root (same device and inode as
that real path), then creates the temporary file, writes it and renames it
through the folder's descriptor: a later swap of the path changes nothing
about where the bytes go. A folder outside the root is `UnsafePath` (the
image fails as "unsafe output path").

Local file-system errors — disk full, read-only, no permission, a name too
long, I/O errors — are `OutputUnusable` (the run stops: retrying cannot
help), never a download error. A temporary file is removed on any failure.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pipeline.errors import OutputUnusable
from pipeline.naming import UnsafePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_FILE_MODE = 0o666


def unusable(path: Path | str, exc: OSError) -> OutputUnusable:
    """The `OutputUnusable` for an OS error on ``path``."""
    return OutputUnusable(str(path), exc.strerror or type(exc).__name__)


def is_inside(real: str, root: str) -> bool:
    """Whether the real path ``real`` is ``root`` (a real path) or below it."""
    return os.path.commonpath([real, root]) == root


class OutputFolder:
    """A folder of the output tree, opened and checked; files are made and renamed through it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, folder: Path, root: str) -> OutputFolder:
        """Open ``folder`` (made if missing) and check it is inside ``root``, a real path.

        `UnsafePath` if it resolves outside; `OutputUnusable` if it cannot be
        made or opened.
        """
        try:
            try:
                fd = os.open(folder, _DIR_FLAGS)
            except FileNotFoundError:  # the first image of its folder
                _check_inside(os.path.realpath(folder), folder, root)  # before making anything
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder, _DIR_FLAGS)
        except OSError as exc:
            raise unusable(folder, exc) from exc
        try:
            real = os.path.realpath(folder)
            _check_inside(real, folder, root)
            opened, there = os.fstat(fd), os.stat(real)
            if (opened.st_dev, opened.st_ino) != (there.st_dev, there.st_ino):
                raise UnsafePath(f"{str(folder)!r} changed while it was opened")
        except OSError as exc:
            os.close(fd)
            raise UnsafePath(f"{str(folder)!r} changed while it was opened") from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, folder)

    def create(self, name: str) -> BinaryIO:
        """A new file ``name`` in this folder, open for writing (`OutputUnusable` if refused)."""
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, _FILE_MODE, dir_fd=self.fd)
        except OSError as exc:
            raise unusable(self.path / name, exc) from exc
        return os.fdopen(fd, "wb")

    def write_new(self, name: str, data: bytes) -> None:
        """Write ``data`` to a new file ``name``; on failure the file is removed."""
        handle = self.create(name)
        try:
            with handle:
                handle.write(data)
        except OSError as exc:
            self.remove(name)
            raise unusable(self.path / name, exc) from exc

    def rename(self, name: str, final: str) -> None:
        """Rename ``name`` to ``final`` atomically (replacing it); on failure ``name`` is removed."""
        try:
            os.replace(name, final, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            self.remove(name)
            raise unusable(self.path / final, exc) from exc

    def remove(self, name: str) -> None:
        """Remove ``name`` if it is there (a cleanup: errors are ignored)."""
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self.fd)

    def close(self) -> None:
        """Close the folder's descriptor."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def place(data: bytes, temp: Path, final: Path, root: str) -> None:
    """Write ``data`` to ``temp`` and rename it to ``final`` (same folder, inside ``root``)."""
    with OutputFolder.open(final.parent, root) as folder:
        folder.write_new(temp.name, data)
        folder.rename(temp.name, final.name)


class SpillFile:
    """A temporary file filled as a large body streams in, then renamed into place.

    Opened on the first `write`; `discard` (always call it) removes the file
    unless `finish` renamed it. `finish` may run in a worker thread: a
    `discard` meanwhile (the download was cancelled) waits for it, so that the
    folder's descriptor is never closed under it.
    """

    def __init__(self, temp: Path, root: str) -> None:
        self.temp = temp
        self._root = root
        self._folder: OutputFolder | None = None
        self._handle: BinaryIO | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether anything was written to the file."""
        return self._folder is not None

    def write(self, data: bytes) -> None:
        """Append ``data`` (`OutputUnusable` on a file-system error)."""
        if self._folder is None:
            self._folder = OutputFolder.open(self.temp.parent, self._root)
            self._handle = self._folder.create(self.temp.name)
        assert self._handle is not None
        try:
            self._handle.write(data)
        except OSError as exc:
            raise unusable(self.temp, exc) from exc

    def finish(self, final: str) -> None:
        """Close the file and rename it to ``final`` in its folder."""
        with self._lock:
            assert self._folder is not None
            assert self._handle is not None
            handle, self._handle = self._handle, None
            try:
                handle.close()
            except OSError as exc:
                raise unusable(self.temp, exc) from exc
            self._folder.rename(self.temp.name, final)
            self._folder.close()
            self._folder = None

    def discard(self) -> None:
        """Close and remove the file, unless it was renamed into place."""
        with self._lock:
            if self._handle is not None:
                handle, self._handle = self._handle, None
                with contextlib.suppress(OSError):
                    handle.close()
            if self._folder is not None:
                folder, self._folder = self._folder, None
                folder.remove(self.temp.name)
                folder.close()


def _check_inside(real: str, folder: Path, root: str) -> None:
    if not is_inside(real, root):
        raise UnsafePath(f"{str(folder)!r} resolves outside the output folder")
