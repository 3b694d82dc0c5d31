"""Where a job's prompts come from, and the settings a prompts file's rows carry (SPEC §4, §11).

A job's prompts are its `prompt`, an inline list, or a file: ``.txt`` one per
line, ``.csv`` with a ``prompt`` column, ``.jsonl`` objects with a ``prompt``
key (or bare strings). Besides ``prompt``, a CSV or JSONL row may carry
``id`` (the catalog id, kept through to export and ``{id}``) and any request
field of the job's op (``aspect_ratio``, ``style_type``, ``seed``,
``num_images``, ...): its values override `defaults` and the job's own
fields for that row, and a `matrix` still multiplies. Cells are converted to
each field's type (`pipeline.cells`); an empty cell leaves the field to the
job. Any other column is an error naming it, unless the job lists it in
``ignore_columns``. For an op that takes ``prompt`` or an alternative
(`Endpoint.one_of`: V4 generate's ``json_prompt``), a row may give the
alternative instead of a prompt, never both.

Files are read as streams, row by row; problems are appended to the
caller's `Reporter` with the data file's own line numbers, at most
`MAX_FILE_PROBLEMS` per file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline import cells, endpoints
from pipeline.sources import Reporter
from pipeline.storable import unstorable
from pipeline.suggestions import did_you_mean
from pipeline.yaml_loader import Path as DataPath

PROMPT_SUFFIXES = (".txt", ".csv", ".jsonl")
#: a prompt longer than this is refused at validate time (no API documents a limit this high)
MAX_PROMPT_CHARS = 10_000
#: problems reported from one prompts file before the rest of it is left unread
MAX_FILE_PROBLEMS = 100
#: the columns every prompts table may have besides the op's request fields
ROW_KEYS = ("prompt", "id")

# CSV cells may be large (long prompts) but not unbounded.
csv.field_size_limit(1024 * 1024)


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One prompt of a job, with the request fields and catalog id its row sets."""

    prompt: str | None
    #: the request fields the row sets (None: none)
    fields: Mapping[str, Any] | None = None
    row_id: str | None = None
    #: the row's line in its prompts file (None for a prompt written in the manifest)
    line: int | None = None


@dataclass(frozen=True)
class Columns:
    """What the columns of one job's prompts table may be, and how their cells are read."""

    op: str
    #: columns the job lists in `ignore_columns`
    ignored: frozenset[str] = frozenset()
    #: request fields the job's matrix sets (a row may not set them too)
    matrix: frozenset[str] = frozenset()

    @classmethod
    def for_job(cls, spec: Any) -> Columns:
        """The columns of a `jobs:` entry (its op, `ignore_columns` and matrix keys)."""
        return cls(
            op=spec.op,
            ignored=frozenset(getattr(spec, "ignore_columns", None) or ()),
            matrix=frozenset(spec.matrix or ()),
        )

    @cached_property
    def fields(self) -> frozenset[str]:
        """The request fields a row may set."""
        return endpoints.endpoint(self.op).fields - {"prompt"}

    @cached_property
    def alternatives(self) -> tuple[str, ...]:
        """Fields a row may give instead of ``prompt`` (`Endpoint.one_of`: V4's ``json_prompt``)."""
        groups = endpoints.endpoint(self.op).one_of
        return tuple(name for group in groups if "prompt" in group for name in group if name != "prompt")

    def choice_problem(self, prompt: str | None, fields: Mapping[str, Any]) -> tuple[str, str] | None:
        """(column, message) when a row gives neither ``prompt`` nor an alternative, or both."""
        given = [name for name in self.alternatives if fields.get(name) is not None]
        names = " or ".join(f"`{name}`" for name in ("prompt", *self.alternatives))
        if prompt and given:
            return given[0], f"give {names}, not both"
        if not prompt and not given:
            return "prompt", f"empty: give {names}"
        return None

    def accepted(self) -> list[str]:
        """Every column a row may have, as listed in messages."""
        return [*ROW_KEYS, *sorted(self.fields)]

    def kinds(self) -> dict[str, str]:
        """How each request field takes a cell's text."""
        return cells.field_kinds(endpoints.endpoint(self.op).request)

    def problem(self, name: str, noun: str = "column") -> str | None:
        """Why a column (or JSONL key: ``noun="key"``) cannot be read for this job, or None if it can."""
        if name in ROW_KEYS or name in self.ignored:
            return None
        if name in self.matrix:
            return f"also a matrix key of this job: set `{name}` in one place"
        if name in self.fields:
            return None
        hint = did_you_mean(name, [*ROW_KEYS, *self.fields])
        return (
            f"unknown {noun}{hint} ({self.op} takes: {', '.join(self.accepted())}; "
            f"list {noun}s to skip in `ignore_columns`)"
        )


class _FileReport:
    """A reporter for one data file that stops the file after `MAX_FILE_PROBLEMS` problems."""

    def __init__(self, report: Reporter, file: Path) -> None:
        self.report = report
        self.file = file
        self.count = 0
        self.line: int | None = None

    def add(self, line: int | None, field: str, message: str) -> None:
        self.count += 1
        self.line = line
        self.report.in_file(self.file, line, field, message)

    def stop(self) -> bool:
        """Whether to leave the rest of the file unread (said once, when it is)."""
        if self.count >= MAX_FILE_PROBLEMS:
            message = f"stopped reading after {MAX_FILE_PROBLEMS} problems"
            self.report.in_file(self.file, self.line, "", message)
            return True
        return False


def iter_rows(
    spec_prompt: str | None,
    spec_prompts: Any,
    base_dir: Path,
    path: DataPath,
    report: Reporter,
    columns: Columns,
) -> Iterator[PromptRow]:
    """Every prompt of a job: its `prompt`, each entry of `prompts`, or one row without a prompt."""
    if spec_prompt is not None and spec_prompts is not None:
        report.at((*path, "prompts"), "give `prompt` or `prompts`, not both")
        return
    if spec_prompts is None:
        yield PromptRow(spec_prompt)
        return
    where = (*path, "prompts")
    if isinstance(spec_prompts, list):
        for i, item in enumerate(spec_prompts):
            if not isinstance(item, str) or not item.strip():
                report.at((*where, i), "each prompt must be non-empty text")
                continue
            yield PromptRow(item)
        return
    if not isinstance(spec_prompts, str):
        report.at(where, "`prompts` is a file (.txt, .csv, .jsonl) or a list of prompts")
        return
    file = base_dir / spec_prompts
    suffix = file.suffix.lower()
    if suffix not in PROMPT_SUFFIXES:
        report.at(where, f"{spec_prompts}: prompts files end in .txt, .csv or .jsonl")
        return
    if not file.is_file():
        report.at(where, f"{spec_prompts}: no such file")
        return
    problems = _FileReport(report, file)
    try:
        if suffix == ".txt":
            yield from _txt_rows(file, problems)
        elif suffix == ".csv":
            yield from _csv_rows(file, problems, columns)
        else:
            yield from _jsonl_rows(file, problems, columns)
    except UnicodeDecodeError as exc:
        report.in_file(file, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        report.at(where, f"{spec_prompts}: cannot read: {exc.strerror}")


def _checked(prompt: str, line: int, problems: _FileReport) -> str | None:
    if len(prompt) > MAX_PROMPT_CHARS:
        problems.add(line, "prompt", f"longer than {MAX_PROMPT_CHARS} characters")
        return None
    if why := unstorable(prompt):
        problems.add(line, "prompt", why)
        return None
    return prompt


def _txt_rows(file: Path, problems: _FileReport) -> Iterator[PromptRow]:
    with file.open(encoding="utf-8-sig") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if text and (ok := _checked(text, number, problems)):
                yield PromptRow(ok, line=number)
            if problems.stop():
                return


def _csv_rows(file: Path, problems: _FileReport, columns: Columns) -> Iterator[PromptRow]:
    with file.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader, [])]
            if not _header_ok(header, problems, columns):
                return
            kinds = columns.kinds()
            prompt_at = header.index("prompt") if "prompt" in header else None
            id_at = header.index("id") if "id" in header else None
            settings = [(i, name, kinds[name]) for i, name in enumerate(header) if name in columns.fields]
            for values in reader:
                if not values:
                    continue  # a blank line
                line = reader.line_num
                row = _csv_row(values, len(header), (prompt_at, id_at), settings, line, problems, columns)
                if row is not None:
                    yield row
                if problems.stop():
                    return
        except csv.Error as exc:
            problems.add(reader.line_num, "", f"CSV error: {exc}")


def _header_ok(header: list[str], problems: _FileReport, columns: Columns) -> bool:
    if "prompt" not in header and not set(columns.alternatives) & set(header):
        named = " or ".join(f"`{name}`" for name in ("prompt", *columns.alternatives))
        problems.add(1, "prompt", f"no column named {named} (columns: {', '.join(header)})")
        return False
    ok = True
    seen: set[str] = set()
    for number, name in enumerate(header, start=1):
        if not name:
            problems.add(1, "", f"column {number} has no name")
            ok = False
            continue
        if name in seen:
            problems.add(1, name, "the column appears twice")
            ok = False
        seen.add(name)
        if why := columns.problem(name):
            problems.add(1, name, why)
            ok = False
    return ok


def _csv_row(
    values: list[str],
    width: int,
    at: tuple[int | None, int | None],
    settings: Iterable[tuple[int, str, str]],
    line: int,
    problems: _FileReport,
    columns: Columns,
) -> PromptRow | None:
    """One CSV record as a row; None (and problems) if it cannot be one.

    ``at`` holds the indexes of the ``prompt`` and ``id`` columns (None: absent).
    """
    if len(values) > width:
        problems.add(line, "", f"{len(values)} cells; the header names {width} columns")
        return None
    values = values + [""] * (width - len(values))
    prompt_at, id_at = at
    prompt = values[prompt_at].strip() if prompt_at is not None else ""
    if not prompt and not columns.alternatives:
        problems.add(line, "prompt", "empty prompt")
        return None
    if prompt and _checked(prompt, line, problems) is None:
        return None
    fields: dict[str, Any] = {}
    try:
        for index, name, kind in settings:
            if text := values[index].strip():  # an empty cell leaves the field to the job
                fields[name] = _cell(name, kind, text, line, problems)
        row_id = _row_id(values[id_at] if id_at is not None else None, line, problems)
    except _BadRow:
        return None
    if columns.alternatives and (choice := columns.choice_problem(prompt, fields)):
        problems.add(line, *choice)
        return None
    return PromptRow(prompt or None, fields or None, row_id, line)


class _BadRow(Exception):
    """A row that cannot be used; its problem is reported already."""


def _cell(name: str, kind: str, text: str, line: int, problems: _FileReport) -> Any:
    """A cell's value for field ``name``; `_BadRow` (and a problem) if it has none."""
    if why := unstorable(text):
        problems.add(line, name, why)
        raise _BadRow
    try:
        return cells.convert(kind, text)
    except ValueError as exc:
        problems.add(line, name, str(exc))
        raise _BadRow from None


def _row_id(raw: object, line: int, problems: _FileReport) -> str | None:
    """A row's catalog id (None when absent or empty); `_BadRow` (and a problem) if it cannot be one."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        problems.add(line, "id", "an id is text or a whole number")
        raise _BadRow
    text = str(raw).strip()
    if why := unstorable(text):
        problems.add(line, "id", why)
        raise _BadRow
    return text or None


def _jsonl_rows(file: Path, problems: _FileReport, columns: Columns) -> Iterator[PromptRow]:
    kinds = columns.kinds()
    with file.open(encoding="utf-8-sig") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                row = _jsonl_row(raw, number, problems, columns, kinds)
                if row is not None:
                    yield row
            if problems.stop():
                return


def _jsonl_row(
    raw: str, line: int, problems: _FileReport, columns: Columns, kinds: Mapping[str, str]
) -> PromptRow | None:
    """One JSONL line as a row; None (and problems) if it cannot be one."""
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        problems.add(line, "", f"not JSON: {getattr(exc, 'msg', exc)}")
        return None
    if isinstance(item, str):
        item = {"prompt": item}
    # keys are shown in messages: one that cannot be printed is refused before that
    bad_keys = [why for key in item if (why := unstorable(key))] if isinstance(item, dict) else []
    if bad_keys:
        problems.add(line, "", f"a key {bad_keys[0]}")
        return None
    bare = isinstance(item, dict) and "prompt" not in item and bool(columns.alternatives)
    if not bare and (
        not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip()
    ):
        problems.add(line, "prompt", "each line is an object with a non-empty `prompt`")
        return None
    assert isinstance(item, dict)
    for key in item:
        if why := columns.problem(key, noun="key"):
            problems.add(line, key, why)
            return None
    prompt = None if bare else _checked(item["prompt"].strip(), line, problems)
    if prompt is None and not bare:
        return None
    fields: dict[str, Any] = {}
    try:
        for name, value in item.items():
            if name in columns.fields and value is not None:
                # JSON has types; text is still read as a CSV cell would be (`"seed": "42"`)
                fields[name] = (
                    _cell(name, kinds[name], value.strip(), line, problems)
                    if isinstance(value, str)
                    else value
                )
        row_id = _row_id(item.get("id"), line, problems)
    except _BadRow:
        return None
    if columns.alternatives and (choice := columns.choice_problem(prompt, fields)):
        problems.add(line, *choice)
        return None
    return PromptRow(prompt, fields or None, row_id, line)
