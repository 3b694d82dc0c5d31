"""Images in an output folder that the ledger does not know (SPEC §11: `run` warns).

They mean that the folder was filled with another ledger — an earlier
ideobatch kept it in the working directory it was started from — and that
this run may pay again for images that exist. A sample of the folder's
image files is looked up (`SAMPLE` of them, found by walking the folder, so
a folder of a million images costs no more than one of a thousand).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.ledger.repository import Ledger
from pipeline.sources import IMAGE_SUFFIXES

#: image files looked up in the ledger at most
SAMPLE = 200


@dataclass(frozen=True)
class Strays:
    """What a look at an output folder found."""

    looked_at: int
    unknown: int
    example: str | None

    def message(self, folder: str) -> str | None:
        """The warning to print, or None when every image looked at is known."""
        if not self.unknown:
            return None
        some = "all" if self.unknown == self.looked_at else f"{self.unknown}"
        return (
            f"the output folder {folder} already holds images this ledger does not know "
            f"({some} of the {self.looked_at} looked at, e.g. {self.example}): were they made with "
            "another ledger? This run pays again for any of them it makes. An earlier ideobatch kept "
            "its ledger in the folder it was run from: see 'Where the ledger lives' in the README"
        )


def sample_images(folder: Path, limit: int = SAMPLE) -> list[str]:
    """Up to ``limit`` image files under ``folder`` (hidden entries and gallery thumbnails skipped)."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        names = set(files)
        # `gallery.html` keeps its thumbnails in `gallery_thumbs/`; temporary files and kept
        # answers (`.ideobatch-*`) are hidden
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and not (d.endswith("_thumbs") and f"{d[: -len('_thumbs')]}.html" in names)
        )
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(os.path.join(root, name))
                if len(found) >= limit:
                    return found
    return found


def _thumbnails(folder: str, files: set[str]) -> bool:
    """Whether ``folder`` holds a gallery's thumbnails (`gallery.html` keeps them in `gallery_thumbs/`)."""
    return folder.endswith("_thumbs") and f"{folder.removesuffix('_thumbs')}.html" in files


async def find_strays(ledger: Ledger, folder: str) -> Strays:
    """Look up a sample of the folder's images in the ledger."""
    paths = sample_images(Path(folder)) if os.path.isdir(folder) else []
    known = await ledger.known_image_paths(paths)
    unknown = [p for p in paths if p not in known]
    return Strays(len(paths), len(unknown), unknown[0] if unknown else None)
