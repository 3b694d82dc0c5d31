"""Validation of the rows of a prompts file that carry their own settings (SPEC §11).

Each row that sets request fields is checked with its op's schema as it will
be sent: `defaults`, the job's fields, the row's, and each matrix
combination merged. A problem the job has without the row is the job's and
reported once at the manifest's line; a problem the row brings is reported
at the row, as ``file:line: column: message``. Rows are streamed; rows with
the same settings are checked once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import endpoints
from pipeline.expand import matrix_combos, merge_params
from pipeline.manifest import LoadedManifest
from pipeline.prompts import Columns, PromptRow, iter_rows
from pipeline.sources import Reporter
from pipeline.yaml_loader import Path as DataPath

#: distinct row settings whose problems are remembered while a file is read
CACHE_SIZE = 4096

Found = tuple[tuple[str, str], ...]


class _RowChecker:
    """Checks the rows of one job against its op's schema, every matrix combination merged."""

    def __init__(self, spec: Any, defaults: Mapping[str, Any], combos: Sequence[Mapping[str, Any]]) -> None:
        self.op = spec.op
        self.endpoint = endpoints.endpoint(spec.op)
        self.defaults = defaults
        self.own = dict(spec.params)
        self.combos = combos
        self.job_problems = [set(self._check(self.own, combo)) for combo in combos]
        self._cache: dict[str, Found] = {}

    def _check(self, own: Mapping[str, Any], combo: Mapping[str, Any]) -> list[tuple[str, str]]:
        params = merge_params(self.op, self.defaults, own, combo)
        return [(f, m) for f, m in self.endpoint.check(params, need_required=False) if f != "prompt"]

    def problems(self, row: PromptRow) -> Found:
        """The problems this row's settings bring (none the job has anyway)."""
        if not row.fields:
            return ()
        settings = repr(sorted(row.fields.items()))
        if settings in self._cache:
            return self._cache[settings]
        own = {**self.own, **row.fields}
        found: dict[tuple[str, str], None] = {}
        for combo, known in zip(self.combos, self.job_problems, strict=True):
            for problem in self._check(own, combo):
                if problem not in known:
                    found[problem] = None
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[settings] = result = tuple(found)
        return result


def count_checked_rows(loaded: LoadedManifest, spec: Any, path: DataPath, report: Reporter) -> int:
    """Stream a job's prompts once, checking each row, and count them."""
    tables = isinstance(spec.prompts, str) and spec.prompts.lower().endswith((".csv", ".jsonl"))
    if getattr(spec, "ignore_columns", None) and not tables:
        report.at((*path, "ignore_columns"), "applies to a prompts file in .csv or .jsonl")
    combos = matrix_combos(spec.matrix) if spec.matrix and all(spec.matrix.values()) else [{}]
    checker = _RowChecker(spec, loaded.manifest.defaults, combos)
    file = loaded.base_dir / spec.prompts if isinstance(spec.prompts, str) else Path(loaded.file)
    catalog_ids = isinstance(spec.images, dict) and spec.images.get("id") is not None
    count = 0
    for row in iter_rows(spec.prompt, spec.prompts, loaded.base_dir, path, report, Columns.for_job(spec)):
        count += 1
        for field, message in checker.problems(row):
            report.in_file(file, row.line, field, message)
        if catalog_ids and row.row_id is not None:
            report.in_file(file, row.line, "id", "the job's catalog gives ids too: keep one of the two")
            catalog_ids = False  # said once
    return count
