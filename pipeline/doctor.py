"""`ideobatch doctor MANIFEST`: a preflight that spends nothing, for cron to run before a paid run.

One check per line, in order: the manifest validates; the API key variable
is set; the ledger is reachable and migrated (or will be, for a SQLite
ledger that the run creates or migrates); the output folder takes a file;
its disk has room for the images left to make (`pipeline.footprint`); the
provider's host name resolves. Nothing is sent to the API and no ledger is
created. The exit code is 0 only when every check passes; else that of the
first failing check, as `run` would exit: 2 for the manifest or the key, 5
for the ledger, the output folder or its disk, 1 for the provider's host.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pipeline.errors import LedgerError, LedgerNotMigrated, ManifestError
from pipeline.exit_codes import EXIT_FAILED_JOBS, EXIT_OK, EXIT_UNUSABLE, EXIT_USAGE
from pipeline.footprint import human_bytes
from pipeline.ledger.repository import Ledger
from pipeline.ledger_location import LedgerPlace
from pipeline.manifest import LoadedManifest
from pipeline.settings import RunSettings
from pipeline.validation import load_valid

T = TypeVar("T")

#: seconds to wait for the ledger and for the provider's host name (doctor must not hang a cron job)
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool | None  # None: not checked (an earlier check must pass first)
    detail: str
    #: the exit code when it fails
    code: int = EXIT_UNUSABLE

    def line(self) -> str:
        """``ok    ledger    /srv/shop/.ideobatch/ledger.db: at the newest schema``."""
        mark = {True: "ok", False: "FAIL", None: "skip"}[self.ok]
        return f"{mark:<5} {self.name:<9} {self.detail}"


def free_bytes(folder: Path) -> int:
    """Bytes free to an ordinary user on the file system of ``folder`` (tests replace it)."""
    return shutil.disk_usage(folder).free


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (tests replace it)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def exit_code(checks: list[Check]) -> int:
    """0 when every check passed, else the code of the first that failed."""
    return next((c.code for c in checks if c.ok is False), EXIT_OK)


def as_json(checks: list[Check]) -> dict[str, Any]:
    """The report as one JSON document."""
    return {"ok": exit_code(checks) == EXIT_OK, "checks": [asdict(c) for c in checks]}


async def diagnose(manifest: str, place: LedgerPlace, *, base_url: str | None = None) -> list[Check]:
    """Every check, in order (later ones are skipped when the manifest is not valid)."""
    try:
        loaded, counts = load_valid(manifest)
    except ManifestError as exc:
        first = exc.problems[0]
        detail = f"{len(exc.problems)} problem(s), first: {first}; see `ideobatch validate {manifest}`"
        later = ("key", "ledger", "output", "disk", "provider")
        skipped = [Check(name, None, "needs a valid manifest") for name in later]
        return [Check("manifest", False, detail, EXIT_USAGE), *skipped]
    settings = RunSettings.from_manifest(loaded).with_overrides(base_url=base_url)
    checks = [Check("manifest", True, f"{manifest}: valid, {counts.total} job(s) before chained stages")]
    checks.append(_key(settings))
    ledger_check, ledger_usable = await _ledger(place)
    checks.append(ledger_check)
    checks.append(_output(settings.output_dir))
    checks.append(await _disk(loaded, settings.output_dir, place.url if ledger_usable else None))
    checks.append(await _provider(settings.provider.url))
    return checks


def _key(settings: RunSettings) -> Check:
    name = settings.provider.key_env
    if os.environ.get(name, "").strip():
        return Check("key", True, f"{name} is set", EXIT_USAGE)
    return Check("key", False, f"{name} is not set: export {name}=... before the run", EXIT_USAGE)


async def _ledger(place: LedgerPlace) -> tuple[Check, bool]:
    """The ledger check, and whether the ledger can be read for what is done already."""
    where = place.describe()
    if not place.exists():
        assert place.file is not None
        problem = _unwritable(place.file.parent)
        if problem:
            return Check("ledger", False, f"{where}: cannot be created: {problem}"), False
        return Check("ledger", True, f"{where}: none yet; the run creates it"), False
    try:
        ledger = await _with_timeout(Ledger.open(place.url, upgrade=False, create=False, retry_window_s=0))
    except LedgerNotMigrated as exc:
        if place.file is not None:  # SQLite ledgers migrate themselves when a run opens them
            return Check("ledger", True, f"{where}: an older schema; the run migrates it"), False
        return Check("ledger", False, str(exc)), False
    except (LedgerError, TimeoutError) as exc:
        return Check("ledger", False, f"{where}: {exc or 'did not answer in time'}"), False
    await ledger.close()
    return Check("ledger", True, f"{where}: reachable, at the newest schema"), True


def _existing(folder: Path) -> Path:
    """``folder``, or the closest of its parents that exists."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _unwritable(folder: Path) -> str | None:
    """Why a file cannot be made in ``folder`` (or where it would be created), or None."""
    probe = _existing(folder)
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".ideobatch-doctor-"):
            pass
    except OSError as exc:
        return f"cannot write in {probe}: {exc.strerror or exc}"
    return None


def _output(output_dir: str) -> Check:
    folder = Path(output_dir)
    if problem := _unwritable(folder):
        return Check("output", False, f"{folder}: {problem}")
    state = "writable" if folder.is_dir() else "the run creates it"
    return Check("output", True, f"{folder}: {state}")


async def _disk(loaded: LoadedManifest, output_dir: str, ledger_url: str | None) -> Check:
    from pipeline.planning import plan_report

    report = await plan_report(str(loaded.path), ledger_url, loaded=loaded)
    needed = int(report["remaining_disk_bytes"])
    images = int(report["images"])
    probe = _existing(Path(output_dir))
    if not probe.is_dir():
        probe = probe.parent
    free = free_bytes(probe)
    detail = f"{human_bytes(free)} free, about {human_bytes(needed)} needed for the images left"
    detail += f" ({images} image(s) in all)"
    return Check("disk", free >= needed, detail if free >= needed else f"too small: {detail}")


async def _provider(base_url: str) -> Check:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await _with_timeout(resolve(host, port))
    except (OSError, TimeoutError) as exc:
        why = str(exc) or "no answer in time"
        return Check("provider", False, f"{host} does not resolve: {why}", EXIT_FAILED_JOBS)
    return Check("provider", True, f"{host} resolves ({', '.join(addresses[:3])})", EXIT_FAILED_JOBS)


async def _with_timeout(work: Awaitable[T]) -> T:
    return await asyncio.wait_for(work, PROBE_TIMEOUT_S)
