"""Where a command's ledger is (SPEC §11), so that one manifest is never paid for twice.

A command given a MANIFEST file uses, unless ``--ledger`` or
``IDEOBATCH_LEDGER`` says otherwise, ``<manifest's folder>/.ideobatch/ledger.db``:
the same manifest finds the same ledger from any working directory. A
command without one uses ``IDEOBATCH_LEDGER`` or ``./.ideobatch/ledger.db``.

An earlier ideobatch kept the ledger in the working directory. When the
ledger beside a manifest does not exist yet but ``./.ideobatch/ledger.db``
knows the manifest (by name), that one is used, and the user is told how to
move it beside the manifest (`move_command`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pipeline.errors import LedgerError, LedgerMissing, ManifestError, Problem
from pipeline.ledger import engine as engines
from pipeline.ledger.faults import masked
from pipeline.ledger.urls import LEDGER_DIR, LEDGER_FILE


class Origin(StrEnum):
    """Why a ledger is where it is."""

    OPTION = "given by --ledger"
    ENV = "given by IDEOBATCH_LEDGER"
    MANIFEST = "the ledger kept beside the manifest"
    CWD = "the working directory's ledger"
    LEGACY = "the working directory's ledger, made by an earlier ideobatch"


@dataclass(frozen=True)
class LedgerPlace:
    """A ledger URL and why it was chosen."""

    url: str
    origin: Origin
    #: the manifest file it was chosen for, if any
    manifest: str | None = None
    #: for a ledger found in the working directory: where it belongs, beside the manifest
    belongs_at: Path | None = None

    @property
    def file(self) -> Path | None:
        """The SQLite file (None for PostgreSQL)."""
        return engines.sqlite_file(self.url)

    def exists(self) -> bool:
        """False only for a SQLite file that is not there (a database server is asked on open)."""
        return engines.missing_sqlite_file(self.url) is None

    def describe(self) -> str:
        """Where and why, for messages: ``/srv/shop/.ideobatch/ledger.db (the ledger kept beside ...)``."""
        shown = str(self.file) if self.file is not None else masked(self.url)
        why = str(self.origin)
        if self.origin is Origin.MANIFEST and self.manifest:
            why += f" {self.manifest}"
        return f"{shown} ({why})"


def sqlite_url(file: Path) -> str:
    """The ledger URL of a SQLite file (made absolute)."""
    return f"sqlite:///{file.absolute()}"


def working_directory_ledger(cwd: Path | None = None) -> Path:
    """``./.ideobatch/ledger.db`` of the working directory."""
    return (cwd or Path.cwd()) / LEDGER_DIR / LEDGER_FILE


def manifest_ledger(manifest: str) -> Path:
    """``<manifest's folder>/.ideobatch/ledger.db``, the real file's folder (symlinks followed)."""
    return Path(manifest).resolve().parent / LEDGER_DIR / LEDGER_FILE


def is_manifest_file(argument: str | None) -> bool:
    """Whether a command's MANIFEST argument names a manifest file (rather than a name, or nothing).

    An argument written as a path (`jobs/shop.yaml`) that names no file is
    `ManifestError`: the ledger beside it cannot be looked for.
    """
    if argument is None:
        return False
    if Path(argument).is_file():
        return True
    if argument.endswith((".yaml", ".yml")) or "/" in argument:
        raise ManifestError([Problem(argument, None, "", "no such manifest file")])
    return False


def place_for(manifest: str | None, given: str | None, origin: Origin | None = None) -> LedgerPlace:
    """The ledger of a command: ``given`` (from ``origin``), else beside ``manifest``, else here."""
    if given:
        return LedgerPlace(given, origin or Origin.OPTION, manifest)
    if is_manifest_file(manifest):
        assert manifest is not None
        return LedgerPlace(sqlite_url(manifest_ledger(manifest)), Origin.MANIFEST, manifest)
    return LedgerPlace(sqlite_url(working_directory_ledger()), Origin.CWD)


async def locate(
    manifest: str | None, given: str | None, origin: Origin | None = None, *, must_exist: bool = False
) -> LedgerPlace:
    """`place_for`, or the working directory's ledger when it (and not the manifest's) knows it.

    ``must_exist``: a SQLite ledger that is not there is `LedgerMissing`,
    naming where it was looked for.
    """
    place = place_for(manifest, given, origin)
    if place.origin is Origin.MANIFEST and not place.exists():
        place = await _earlier_ledger(place) or place
    if must_exist and not place.exists():
        raise LedgerMissing(missing_message(place))
    return place


def missing_message(place: LedgerPlace) -> str:
    """What a command that creates no ledger says when there is none."""
    hint = "run the manifest first, or give --ledger URL (or IDEOBATCH_LEDGER) to read another ledger"
    if place.origin is Origin.CWD:
        hint = "give a MANIFEST file (its ledger is beside it), --ledger URL or IDEOBATCH_LEDGER"
    return f"there is no ledger at {place.describe()}: nothing was created; {hint}"


async def _earlier_ledger(place: LedgerPlace) -> LedgerPlace | None:
    """The working directory's ledger when it knows the manifest (an earlier ideobatch made it there)."""
    here = working_directory_ledger()
    if place.manifest is None or not here.is_file() or here.absolute() == place.file:
        return None
    from pipeline.ledger.repository import Ledger
    from pipeline.manifest import load_manifest

    try:
        name = load_manifest(place.manifest).manifest.name
        ledger = await Ledger.open(sqlite_url(here))
    except (ManifestError, LedgerError):
        return None  # the command itself says what is wrong with either
    try:
        known = await ledger.get_manifest(name) is not None
    except LedgerError:
        known = False
    finally:
        await ledger.close()
    if not known:
        return None
    return replace(place, url=sqlite_url(here), origin=Origin.LEGACY, belongs_at=place.file)


def move_command(place: LedgerPlace) -> str | None:
    """For a ledger an earlier ideobatch made in the working directory: how to move it beside its manifest."""
    if place.origin is not Origin.LEGACY or place.file is None or place.belongs_at is None:
        return None
    files = [
        str(place.file),
        *(f"{place.file}{tail}" for tail in ("-wal", "-shm") if _exists(place.file, tail)),
    ]
    folder = str(place.belongs_at.parent)
    return f"mkdir -p {shlex.quote(folder)} && mv {shlex.join(files)} {shlex.quote(folder)}/"


def _exists(file: Path, tail: str) -> bool:
    return Path(f"{file}{tail}").exists()


def legacy_notice(place: LedgerPlace) -> str | None:
    """The warning of a command using a ledger an earlier ideobatch made in the working directory."""
    command = move_command(place)
    if command is None:
        return None
    return (
        f"using {place.describe()}: it knows this manifest, and none is beside the manifest yet. "
        f"ideobatch now keeps a manifest's ledger beside it ({place.belongs_at}), so that it is found "
        f"from any folder; when no run is going on, move it there with: {command}"
    )
