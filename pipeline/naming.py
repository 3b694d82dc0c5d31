"""Output file names: templates, sanitized values, and never a path outside the output folder.

A template such as ``{op}/{slug}-{seed}.{ext}`` may use the placeholders in
`PLACEHOLDERS`. Values are reduced to safe file-name characters; literal
parts may make sub-folders but never ``..`` or an absolute path; the final
path is resolved (symlinks included) and must stay inside the output folder.
A template that could give two images one path gets the job key (and the
image index) added, so names never collide.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDERS = frozenset({"op", "slug", "seed", "index", "key", "id", "model", "ext"})
KEY_PREFIX_CHARS = 12
MAX_SLUG_CHARS = 60
MAX_COMPONENT_CHARS = 120
#: the longest file or folder name rendered, in bytes: file systems refuse names over 255
#: bytes, and a download's temporary name adds up to 55 to its final name
MAX_NAME_BYTES = 200
#: folder levels a template may make (with the longest names, a path stays under the limit)
MAX_SEGMENTS = 16
#: the longest whole path rendered, in bytes (Linux refuses paths over 4096)
MAX_PATH_BYTES = 3800
#: literal text of a template may take this much of a name; placeholders need the rest
MAX_LITERAL_NAME_BYTES = 120
#: placeholders that are shortened, longest first, when a name would be too long (never
#: the key, index or extension: they keep names unique)
_SHRINKABLE = ("slug", "id", "model", "op", "seed")
_MIN_SHRUNK_CHARS = 8

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")


class UnsafePath(ValueError):
    """A rendered name would leave the output folder or is not a usable path."""


def template_problem(template: str) -> str | None:
    """Why a name template is unusable, or None if it is fine."""
    if not template.strip():
        return "the name template is empty"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"bad template: {exc}"
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
            return f"unknown placeholder {{{field}}}; use {known}"
        if spec or conversion:
            return f"placeholder {{{field}}} takes no format spec or conversion"
    literal_text = "".join(part[0] for part in parsed)
    if template.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", template):
        return "the name template must be relative to the output folder"
    if "\\" in literal_text or "\x00" in template:
        return "the name template may not contain backslashes or NUL"
    segments = _skeleton(parsed).split("/")
    if any(seg in ("..", ".") for seg in segments):
        return "the name template may not contain `..` or `.` path segments"
    if any(seg == "" for seg in segments):
        return "the name template has an empty path segment (`//` or a trailing `/`)"
    if len(segments) > MAX_SEGMENTS:
        return f"the name template has {len(segments)} folder levels; at most {MAX_SEGMENTS}"
    if any(len(seg.encode("utf-8")) > MAX_LITERAL_NAME_BYTES for seg in literal_text.split("/")):
        return (
            f"a folder or file name of the template has over {MAX_LITERAL_NAME_BYTES} bytes of literal text"
        )
    return None


def _skeleton(parsed: list[tuple[str, str | None, str | None, str | None]]) -> str:
    # placeholders become a neutral character so only literal path structure is judged
    return "".join(lit + ("x" if field is not None else "") for lit, field, _s, _c in parsed)


def unique_template(template: str, multi_image: bool) -> str:
    """The template with `{key}` (and `{index}` for multi-image jobs) added where missing."""
    head, dot, tail = template.rpartition(".{ext}")
    if not dot:
        head, tail = template, ""
    if "{key}" not in template:
        head += "-{key}"
    if multi_image and "{index}" not in template:
        head += "-{index}"
    return f"{head}.{{ext}}{tail}"


def slugify(text: str | None, fallback: str = "image") -> str:
    """A short lowercase ASCII slug of a prompt or file name."""
    if not text:
        return fallback
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_UNSAFE.sub("-", ascii_text.lower()).strip("-")
    slug = slug[:MAX_SLUG_CHARS].rstrip("-")
    return slug or fallback


def safe_component(value: str) -> str:
    """A value reduced to characters that cannot form a path (no `/`, no `..`)."""
    cleaned = _UNSAFE.sub("-", value).strip(".-")[:MAX_COMPONENT_CHARS]
    return cleaned or "_"


@dataclass(frozen=True)
class NameFields:
    """The values a name template can use for one image."""

    op: str
    slug: str
    key: str
    index: int
    ext: str
    seed: int | None = None
    id: str | None = None
    model: str | None = None


def render_name(
    template: str, fields: NameFields, out_dir: Path, resolved: dict[Path, Path] | None = None
) -> Path:
    """The absolute path of one image; raise `UnsafePath` if it would leave ``out_dir``.

    ``resolved`` caches real paths of folders across calls (a run writes
    thousands of images into a few folders; each check would cost syscalls).
    """
    values = {
        "op": safe_component(fields.op),
        "slug": safe_component(fields.slug),
        "key": fields.key[:KEY_PREFIX_CHARS],
        "index": str(fields.index),
        "ext": safe_component(fields.ext),
        "seed": str(fields.seed) if fields.seed is not None else "noseed",
        "id": safe_component(fields.id) if fields.id else "noid",
        "model": safe_component(fields.model) if fields.model else "nomodel",
    }
    relative = _fitted(template, values)
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts) or os.path.isabs(relative):
        raise UnsafePath(f"{relative!r} is not a safe relative path")
    cache = resolved if resolved is not None else {}
    root = _real(out_dir, cache)
    target = root.joinpath(*parts)
    if len(str(target).encode("utf-8")) > MAX_PATH_BYTES:
        raise UnsafePath(f"{relative[:80]}...: a path longer than {MAX_PATH_BYTES} bytes")
    # the folder's real path (a symlink on the way may point elsewhere); the file
    # itself is replaced by an atomic rename, which never follows a link
    if not _real(target.parent, cache).is_relative_to(root):
        raise UnsafePath(f"{relative!r} resolves outside the output folder")
    return target


def _fitted(template: str, values: dict[str, str]) -> str:
    """The template rendered with each name at most `MAX_NAME_BYTES` long.

    A name over the limit has its longest shrinkable value (the slug, the
    catalog id...) cut first, down to `_MIN_SHRUNK_CHARS`; the job key, index
    and extension are never cut, so names stay unique.
    """
    relative = template.format(**values)
    while any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in relative.split("/")):
        name, value = max(((n, values[n]) for n in _SHRINKABLE), key=lambda item: len(item[1]))
        if len(value) <= _MIN_SHRUNK_CHARS:
            raise UnsafePath(f"{relative[:80]}...: a name longer than {MAX_NAME_BYTES} bytes")
        values = {**values, name: value[: max(_MIN_SHRUNK_CHARS, len(value) // 2)].rstrip("-.") or "_"}
        relative = template.format(**values)
    return relative


def _real(folder: Path, cache: dict[Path, Path]) -> Path:
    real = cache.get(folder)
    if real is None:
        real = cache[folder] = Path(os.path.realpath(folder))
    return real
