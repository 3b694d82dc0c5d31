"""A job's files besides its main image, from the manifest to `InputFile`s (SPEC §10 Files).

The endpoint catalog names each op's file roles (`pipeline.endpoints.FileRole`).
In a manifest, a role that holds a list (``style_reference_images``,
``character_reference_images``, ``character_reference_images_mask``) is a
list of paths or URLs, on a job or in ``defaults``; it is the same for every
job of the entry. A role with one file per main image (``mask``) is a path
template with ``{stem}`` (the image file's name without extension) and
``{id}`` (its catalog id) — ``masks/{stem}.png`` — or a column of the
catalog CSV (``images: {csv: f, column: image, mask: mask_path}``).

Paths are relative to the manifest's folder (a catalog's columns: to the
CSV's). A local file's identity is the sha256 of its bytes, hashed once per
process for a given (path, size, mtime); a URL is its own identity.
"""

from __future__ import annotations

import os
import string
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline import endpoints
from pipeline.endpoints import Endpoint
from pipeline.jobs import InputFile
from pipeline.sources import SourceImage, file_sha256, is_url

#: the placeholders a per-image template may use
TEMPLATE_FIELDS = ("stem", "id")
#: how many local file hashes to remember (a reference used by a million jobs is hashed once)
HASH_CACHE_SIZE = 4096


def own_request(op: str, own: Mapping[str, Any]) -> dict[str, Any]:
    """A job's own fields without the file roles its op takes (those are not request fields)."""
    roles = endpoints.endpoint(op).file_names
    return {k: v for k, v in own.items() if k not in roles}


def merge_files(op: str, defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The op's file roles as written: a job's own value replaces the default's."""
    roles = endpoints.endpoint(op).file_names
    merged = {k: v for k, v in defaults.items() if k in roles}
    merged.update({k: v for k, v in own.items() if k in roles})
    return merged


def template_problem(template: str) -> str | None:
    """Why a per-image template cannot be used, or None."""
    try:
        names = [f for _lit, f, _spec, _conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"bad template: {exc} (write literal braces as {{{{ and }}}})"
    for name in names:
        if name not in TEMPLATE_FIELDS:
            shown = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            return f"unknown placeholder {{{name}}}; use {shown}"
    return None


def render(template: str, image: SourceImage) -> str:
    """A per-image template filled in for ``image``."""
    return template.format(stem=image.stem, id=image.catalog_id or "")


def resolve(text: str, base_dir: Path | str) -> str:
    """A path or URL as written, as a location: URLs as they are, paths absolute."""
    text = text.strip()
    if is_url(text):
        return text
    return str((Path(base_dir) / os.path.expanduser(text)).resolve())


def input_counts(inputs: Iterable[InputFile]) -> dict[str, int]:
    """How many files of each role."""
    counts: dict[str, int] = {}
    for item in inputs:
        counts[item.role] = counts.get(item.role, 0) + 1
    return counts


def key_inputs(inputs: Iterable[InputFile]) -> list[tuple[str, str]]:
    """The (role, identity) pairs a job key hashes."""
    return [(item.role, item.identity) for item in inputs]


class InputResolver:
    """Turns a job's file roles into `InputFile`s, hashing each local file once."""

    def __init__(self) -> None:
        self._hashes: OrderedDict[tuple[str, int, int], str] = OrderedDict()

    def sha256(self, path: str) -> str:
        """The sha256 of a local file's bytes (cached by path, size and modification time)."""
        stat = Path(path).stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in self._hashes:
            self._hashes.move_to_end(key)
            return self._hashes[key]
        digest = file_sha256(Path(path))
        self._hashes[key] = digest
        if len(self._hashes) > HASH_CACHE_SIZE:
            self._hashes.popitem(last=False)
        return digest

    def input_file(self, role: str, location: str) -> InputFile:
        """One input: a URL as it is, a local file with its hash."""
        if is_url(location):
            return InputFile(role, location)
        return InputFile(role, location, self.sha256(location))

    def shared(
        self, ep: Endpoint, files: Mapping[str, Any], base_dir: Path | str
    ) -> dict[str, list[InputFile]]:
        """The list roles of a job (the same for each of its calls), by role."""
        out: dict[str, list[InputFile]] = {}
        for role in ep.files:
            value = files.get(role.name)
            if role.many and isinstance(value, list):
                out[role.name] = [self.input_file(role.name, resolve(str(item), base_dir)) for item in value]
        return out

    def per_image(
        self, ep: Endpoint, files: Mapping[str, Any], image: SourceImage | None, base_dir: Path | str
    ) -> dict[str, list[InputFile]]:
        """The per-image roles of one image: from its catalog row, or the job's template."""
        out: dict[str, list[InputFile]] = {}
        if image is None:
            return out
        from_row = {role: location for role, location, _column in image.companions}
        for role in ep.files:
            if role.many:
                continue
            if role.name in from_row:
                out[role.name] = [self.input_file(role.name, from_row[role.name])]
            elif isinstance(files.get(role.name), str):
                location = resolve(render(files[role.name], image), base_dir)
                out[role.name] = [self.input_file(role.name, location)]
        return out

    def inputs(
        self,
        ep: Endpoint,
        files: Mapping[str, Any],
        image: SourceImage | None,
        base_dir: Path | str,
        shared: Mapping[str, list[InputFile]] | None = None,
    ) -> tuple[InputFile, ...]:
        """Every input of one job, in the catalog's role order (``shared``: the list roles, if known)."""
        found = {
            **(self.shared(ep, files, base_dir) if shared is None else shared),
            **self.per_image(ep, files, image, base_dir),
        }
        return tuple(item for role in ep.files for item in found.get(role.name, ()))


#: the resolver of this process (its hash cache serves planning and chained stages alike)
RESOLVER = InputResolver()
