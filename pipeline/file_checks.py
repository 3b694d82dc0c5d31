"""What the API asks of a call's files, checked the same way wherever the files are seen.

A call sends a main image and, per the endpoint catalog, other files by role
(a mask, reference sets). Each file must be JPEG, PNG or WebP (by its bytes),
at most 10 MB and decodable; a role's files together stay under the role's
cap (reference sets: 10 MB); a file that pairs with another (a mask with its
image, a character mask with its reference) has its width and height; an op
that takes square images gets one. `file_problems` states those rules once,
over `FileFacts`: validation feeds it local files (`local_facts`), the client
the URL sources it downloaded (`bytes_facts`), the fake server what it
received.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.endpoints import MAX_FILE_BYTES, Endpoint
from pipeline.images import image_size_from_bytes, image_size_of_file, sniff_image_type

#: enough of a file to tell its type
SNIFF_BYTES = 32


@dataclass(frozen=True)
class FileFacts:
    """What the checks need to know about one file."""

    #: the file as messages name it (a path as written, a URL)
    name: str
    size: int
    #: ``png``, ``jpeg``, ``webp``, or None for anything else
    kind: str | None
    width: int | None = None
    height: int | None = None
    #: why the file cannot be read or decoded, if it cannot
    unreadable: str | None = None

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """(width, height), when known."""
        return (self.width, self.height) if self.width is not None and self.height is not None else None


@dataclass(frozen=True)
class FileProblem:
    """A problem with one file (``index`` in its role's list) or with a whole role (``index`` None)."""

    role: str
    index: int | None
    message: str


def local_facts(path: Path, name: str) -> FileFacts:
    """The facts of a local file, reading its first bytes and header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except FileNotFoundError:
        return FileFacts(name, 0, None, unreadable="no such file")
    except OSError as exc:
        return FileFacts(name, 0, None, unreadable=f"cannot read: {exc.strerror}")
    kind = sniff_image_type(head)
    if kind is None or size > MAX_FILE_BYTES:
        return FileFacts(name, size, kind)
    try:
        width, height = image_size_of_file(path)
    except ValueError as exc:
        return FileFacts(name, size, kind, unreadable=str(exc))
    return FileFacts(name, size, kind, width, height)


def bytes_facts(data: bytes, name: str) -> FileFacts:
    """The facts of a file held in memory."""
    kind = sniff_image_type(data[:SNIFF_BYTES])
    if kind is None or len(data) > MAX_FILE_BYTES:
        return FileFacts(name, len(data), kind)
    try:
        width, height = image_size_from_bytes(data)
    except ValueError as exc:
        return FileFacts(name, len(data), kind, unreadable=str(exc))
    return FileFacts(name, len(data), kind, width, height)


def header_facts(head: bytes, size: int, name: str) -> FileFacts:
    """The facts of a file of ``size`` bytes known by its first bytes (a streamed upload)."""
    kind = sniff_image_type(head[:SNIFF_BYTES])
    if kind is None or size > MAX_FILE_BYTES:
        return FileFacts(name, size, kind)
    try:
        width, height = image_size_from_bytes(head)
    except ValueError as exc:
        return FileFacts(name, size, kind, unreadable=str(exc))
    return FileFacts(name, size, kind, width, height)


def one_file_problem(facts: FileFacts) -> str | None:
    """Why one file cannot be sent (not an image, too big, undecodable), or None."""
    if facts.unreadable and facts.size == 0 and facts.kind is None:
        return facts.unreadable
    if facts.size > MAX_FILE_BYTES:
        return f"{facts.size} bytes; the API takes at most {MAX_FILE_BYTES} (10 MB)"
    if facts.kind is None:
        return "not a JPEG, PNG or WebP image"
    if facts.unreadable:
        return facts.unreadable
    return None


def file_problems(
    ep: Endpoint,
    image: FileFacts | None,
    files: Mapping[str, Sequence[FileFacts | None]],
) -> list[FileProblem]:
    """Every problem of a call's files: each file, each role's total, pairs, square images.

    ``files`` holds each role's files in order; None stands for a file not
    known here (a URL the server fetches), which is skipped.
    """
    problems: list[FileProblem] = []
    main = ep.image or "image"
    if image is not None:
        if why := one_file_problem(image):
            problems.append(FileProblem(main, None, why))
        elif ep.square_image and (size := image.dimensions) and size[0] != size[1]:
            problems.append(
                FileProblem(main, None, f"{size[0]}x{size[1]} is not square; {ep.op} takes square images")
            )
    for role in ep.files:
        listed = files.get(role.name, ())
        for index, facts in enumerate(listed):
            if facts is not None and (why := one_file_problem(facts)):
                problems.append(FileProblem(role.name, index if role.many else None, why))
        known = [f for f in listed if f is not None]
        total = sum(f.size for f in known)
        if role.many and total > role.max_bytes:
            problems.append(
                FileProblem(
                    role.name,
                    None,
                    f"{len(known)} files of {total} bytes together; the API takes at most {role.max_bytes} "
                    f"({role.max_bytes // (1024 * 1024)} MB) for the set",
                )
            )
        if role.pairs_with is not None:
            partners: Sequence[FileFacts | None]
            partners = [image] if role.pairs_with == ep.image else files.get(role.pairs_with, ())
            for index, (facts, partner) in enumerate(zip(listed, partners, strict=False)):
                mine = facts.dimensions if facts is not None else None
                theirs = partner.dimensions if partner is not None else None
                if mine and theirs and mine != theirs:
                    problems.append(
                        FileProblem(
                            role.name,
                            index if role.many else None,
                            f"{mine[0]}x{mine[1]}, but {partner.name if partner else '?'} is "
                            f"{theirs[0]}x{theirs[1]}: a mask has the size of its image",
                        )
                    )
    return problems
