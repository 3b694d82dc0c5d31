"""Where source images come from, read as streams (prompts: `pipeline.prompts`).

Images: a glob (or a folder), a list of paths or URLs, or a catalog CSV
``{csv: file, column: url, id: sku}`` whose rows may also name each image's
companion files (``mask: mask_path``: a column per file role the op takes
per image). Nothing is held in memory whole: a
catalog of a million rows is read row by row. Problems are appended to the
list the caller passes, each with the data file's own line number.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.api_schema import MAX_SOURCE_BYTES
from pipeline.errors import Problem
from pipeline.images import sniff_image_type
from pipeline.storable import unstorable
from pipeline.yaml_loader import Path as DataPath

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})

# CSV cells may be large (long prompts) but not unbounded.
csv.field_size_limit(1024 * 1024)


@dataclass(frozen=True)
class SourceImage:
    """One source image: a URL or a local file (path as resolved against the manifest folder)."""

    location: str
    is_url: bool
    catalog_id: str | None = None
    line: int | None = None
    #: the catalog CSV the image was read from (None for a glob or a list)
    catalog: str | None = None
    #: files that go with this image, from its catalog row: (role, URL or absolute path, column)
    companions: tuple[tuple[str, str, str], ...] = ()

    @property
    def stem(self) -> str:
        """The file name without extension, for `{slug}`."""
        tail = self.location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return tail.rsplit(".", 1)[0] if "." in tail else tail


def is_url(text: str) -> bool:
    """Whether a source string is an http(s) URL rather than a path."""
    return text.startswith(("http://", "https://"))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Reporter:
    """Collects problems for one manifest, located in the manifest or in a data file."""

    def __init__(self, manifest_file: str, line_of: Any) -> None:
        self.manifest_file = manifest_file
        self._line_of = line_of
        self.problems: list[Problem] = []

    def at(self, path: DataPath, message: str) -> None:
        """A problem at a field of the manifest."""
        from pipeline.yaml_loader import dotted

        self.problems.append(Problem(self.manifest_file, self._line_of(path), dotted(path), message))

    def in_file(self, file: Path | str, line: int | None, field: str, message: str) -> None:
        """A problem in a data file (prompts or catalog)."""
        self.problems.append(Problem(str(file), line, field, message))


# --- images ----------------------------------------------------------------------


def _row_companions(
    row: dict[str, str],
    columns: dict[str, str],
    folder: Path,
    report: Reporter,
    check_files: bool,
    csv_line: tuple[Path, int],
) -> tuple[tuple[str, str, str], ...] | None:
    """A catalog row's companion files as (role, location, column); None if one is unusable."""
    found = []
    ok = True
    for role, column in columns.items():
        value = (row.get(column) or "").strip()
        if not value:
            report.in_file(csv_line[0], csv_line[1], column, "empty")
            ok = False
            continue
        if why := unstorable(value):
            report.in_file(csv_line[0], csv_line[1], column, why)
            ok = False
            continue
        if is_url(value):
            found.append((role, value, column))
            continue
        file = (folder / os.path.expanduser(value)).resolve()
        if check_files and (why := check_local_image(file)):
            report.in_file(csv_line[0], csv_line[1], column, f"{value}: {why}")
            ok = False
            continue
        found.append((role, str(file), column))
    return tuple(found) if ok else None


def check_local_image(file: Path) -> str | None:
    """Why a local source image cannot be sent (missing, too big, not JPEG/PNG/WebP), or None."""
    try:
        size = file.stat().st_size
        if not file.is_file():
            return "not a file"
        if size > MAX_SOURCE_BYTES:
            return f"{size} bytes; the API takes at most {MAX_SOURCE_BYTES} (10 MB)"
        with file.open("rb") as handle:
            head = handle.read(32)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if sniff_image_type(head) is None:
        return "not a JPEG, PNG or WebP image"
    return None


def iter_images(
    spec_images: Any,
    base_dir: Path,
    path: DataPath,
    report: Reporter,
    *,
    check_files: bool = True,
    companions: tuple[str, ...] = (),
) -> Iterator[SourceImage]:
    """Every source image of a job, in a stable order (globs sorted).

    ``companions`` are the file roles a catalog CSV may give per row (a
    column named by the key of the role: ``mask: mask_path``).
    """
    where = (*path, "images")
    if isinstance(spec_images, str):
        yield from _glob_images(spec_images, base_dir, where, report, check_files)
    elif isinstance(spec_images, list):
        if not spec_images:
            report.at(where, "the list is empty")
        for i, item in enumerate(spec_images):
            if not isinstance(item, str) or not item.strip():
                report.at((*where, i), "each image is a path or an http(s) URL")
                continue
            yield from _one_image(item.strip(), base_dir, (*where, i), report, check_files, None, None)
    elif isinstance(spec_images, dict):
        yield from _csv_images(spec_images, base_dir, where, report, check_files, companions)
    else:
        report.at(where, "`images` is a glob, a list of paths or URLs, or {csv, column, id}")


def _one_image(
    text: str,
    base_dir: Path,
    where: DataPath,
    report: Reporter,
    check_files: bool,
    catalog_id: str | None,
    csv_line: tuple[Path, int] | None,
) -> Iterator[SourceImage]:
    if unstorable(text):
        # glob reads a file name that is not UTF-8 with surrogate escapes: it cannot be stored
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        report.at(where, f"{shown}: the file name is not UTF-8 text; rename the file")
        return
    if is_url(text):
        yield SourceImage(text, True, catalog_id)
        return
    if "://" in text:
        message = f"{text}: only http:// and https:// URLs are supported"
        if csv_line:
            report.in_file(csv_line[0], csv_line[1], "", message)
        else:
            report.at(where, message)
        return
    file = (base_dir / os.path.expanduser(text)).resolve()
    if check_files and (why := check_local_image(file)):
        if csv_line:
            report.in_file(csv_line[0], csv_line[1], "", f"{text}: {why}")
        else:
            report.at(where, f"{text}: {why}")
        return
    yield SourceImage(str(file), False, catalog_id, csv_line[1] if csv_line else None)


def _glob_images(
    pattern: str, base_dir: Path, where: DataPath, report: Reporter, check_files: bool
) -> Iterator[SourceImage]:
    if is_url(pattern):
        yield SourceImage(pattern, True)
        return
    root = base_dir / os.path.expanduser(pattern)
    if root.is_dir():
        root = root / "*"
    matches = sorted(
        m for m in glob.iglob(str(root), recursive=True) if Path(m).suffix.lower() in IMAGE_SUFFIXES
    )
    if not matches:
        report.at(where, f"{pattern}: matches no .png, .jpg, .jpeg or .webp file")
        return
    for match in matches:
        yield from _one_image(match, base_dir, where, report, check_files, None, None)


def _csv_images(
    spec: dict[str, Any],
    base_dir: Path,
    where: DataPath,
    report: Reporter,
    check_files: bool,
    companions: tuple[str, ...],
) -> Iterator[SourceImage]:
    keys = ("csv", "column", "id", *companions)
    unknown = sorted(set(spec) - set(keys))
    for key in unknown:
        report.at((*where, key), f"unknown key (a catalog is {{{', '.join(keys)}}})")
    file_name, column, id_column = spec.get("csv"), spec.get("column", "url"), spec.get("id")
    extra = {role: spec[role] for role in companions if role in spec}
    if any(not isinstance(name, str) for name in extra.values()):
        report.at(where, f"`{'`, `'.join(extra)}` name columns")
        return
    if not isinstance(file_name, str):
        report.at((*where, "csv"), "required: the catalog CSV file")
        return
    if not isinstance(column, str) or (id_column is not None and not isinstance(id_column, str)):
        report.at(where, "`column` and `id` are column names")
        return
    file = base_dir / file_name
    if not file.is_file():
        report.at((*where, "csv"), f"{file_name}: no such file")
        return
    folder = file.parent.resolve()
    seen_ids: set[str] = set()
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            names = reader.fieldnames or []
            wanted = {"column": column, "id": id_column, **extra}
            missing = [(key, name) for key, name in wanted.items() if name is not None and name not in names]
            if missing:
                for key, name in missing:
                    report.at(
                        (*where, key),
                        f"{file_name} has no column `{name}` (columns: {', '.join(names)})",
                    )
                return
            for row in reader:
                value = (row.get(column) or "").strip()
                line = reader.line_num
                if not value:
                    report.in_file(file, line, column, "empty")
                    continue
                if why := unstorable(value):
                    report.in_file(file, line, column, why)
                    continue
                catalog_id = (row.get(id_column) or "").strip() if id_column else None
                if id_column and not catalog_id:
                    report.in_file(file, line, id_column, "empty id")
                    continue
                if catalog_id is not None and (why := unstorable(catalog_id)):
                    report.in_file(file, line, id_column or "id", why)
                    continue
                if catalog_id is not None:
                    # ids are few per catalog row; a million short strings fit in memory
                    if catalog_id in seen_ids:
                        report.in_file(file, line, id_column or "id", f"duplicate id {catalog_id!r}")
                        continue
                    seen_ids.add(catalog_id)
                found = _row_companions(row, extra, folder, report, check_files, (file, line))
                if found is None:
                    continue
                for image in _one_image(value, folder, where, report, check_files, catalog_id, (file, line)):
                    yield replace(image, catalog=str(file), companions=found)
    except UnicodeDecodeError as exc:
        report.in_file(file, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except csv.Error as exc:
        report.in_file(file, None, "", f"CSV error: {exc}")
