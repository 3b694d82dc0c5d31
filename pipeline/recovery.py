"""Paid answers kept on disk when the ledger cannot take them, and taken back later.

When the ledger stops answering (past its retry window) while a call's paid
answer is in hand, the answer is not thrown away: its images are downloaded
(the URLs expire; downloads need no ledger) and the answer — the API's
result, what became of each download, the cost and the attempt — is written
as one JSON file (temporary file, then an atomic rename) to
``<manifest's folder>/.ideobatch/recovery/<manifest>-<job key>.json``, beside
the manifest's own ledger, so a run with another ``--out`` finds it too
(where that folder cannot be written, under ``<output dir>/.ideobatch-recovery/``).
The next run or worker of that manifest records every such file in the ledger
before it claims anything (`Ledger.import_answers`), so the job is never paid
for twice, and then deletes it. The file holds no secret: the key never
reaches the result.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import OutputUnusable
from pipeline.results import ApiResult, DownloadOutcome, GeneratedImage

log = logging.getLogger("ideobatch")

RECOVERY_DIR = ".ideobatch-recovery"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class KeptAnswer:
    """A paid answer that the ledger could not record, with its downloads."""

    manifest: str
    job_key: str
    attempt_id: int | None
    cost_micros: int
    result: ApiResult
    downloads: tuple[DownloadOutcome, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The answer as a JSON-ready dict."""
        return {
            "version": FORMAT_VERSION,
            "manifest": self.manifest,
            "job_key": self.job_key,
            "attempt_id": self.attempt_id,
            "cost_micros": self.cost_micros,
            "result": {
                "images": [asdict(image) for image in self.result.images],
                "descriptions": list(self.result.descriptions),
                "created": self.result.created,
            },
            "downloads": [asdict(outcome) for outcome in self.downloads],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeptAnswer:
        """An answer read back (KeyError/TypeError/ValueError if the file is not one)."""
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown recovery format {data.get('version')!r}")
        result = data["result"]
        return cls(
            manifest=str(data["manifest"]),
            job_key=str(data["job_key"]),
            attempt_id=data["attempt_id"],
            cost_micros=int(data["cost_micros"]),
            result=ApiResult(
                images=tuple(GeneratedImage(**image) for image in result["images"]),
                descriptions=tuple(str(text) for text in result["descriptions"]),
                created=result["created"],
            ),
            downloads=tuple(DownloadOutcome(**outcome) for outcome in data["downloads"]),
        )


def recovery_dirs(base_dir: str | Path, output_dir: str | Path) -> tuple[Path, Path]:
    """Where a manifest's kept answers go: beside its ledger, else under its output folder."""
    return Path(base_dir) / ".ideobatch" / "recovery", Path(output_dir) / RECOVERY_DIR


def keep_answer(folders: Sequence[Path], answer: KeptAnswer) -> Path:
    """Write ``answer`` atomically in the first of ``folders`` that takes it; `OutputUnusable` if none."""
    failure: OutputUnusable | None = None
    for folder in folders:
        final = folder / f"{answer.manifest}-{answer.job_key}.json"
        temp = final.with_name(f".{final.name}.{os.getpid()}.part")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with temp.open("w", encoding="utf-8") as handle:
                json.dump(answer.to_json(), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            failure = OutputUnusable(str(final), exc.strerror or str(exc))
            continue
        return final
    assert failure is not None, "no folder to keep the answer in"
    raise failure


def kept_answers(folders: Sequence[Path], manifest: str) -> Iterator[tuple[Path, KeptAnswer]]:
    """The kept answers of ``manifest`` in ``folders`` (a file that does not read back is logged and left)."""
    for folder in folders:
        yield from _kept_in(folder, manifest)


def _kept_in(folder: Path, manifest: str) -> Iterator[tuple[Path, KeptAnswer]]:
    try:
        found = sorted(folder.glob(f"{manifest}-*.json")) if folder.is_dir() else []
    except OSError:  # a folder the file system refuses: nothing can have been kept there
        return
    for path in found:
        try:
            answer = KeptAnswer.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.error("cannot read the kept answer %s (%s): left in place", path, exc)
            continue
        if answer.manifest == manifest:
            yield path, answer


def forget(paths: Sequence[Path]) -> None:
    """Delete kept answers once the ledger holds them."""
    for path in paths:
        path.unlink(missing_ok=True)
