"""A small real run for the review tests: a matrix, a failure, a chained remix and a catalog remix.

Jobs (8): "a red fox" × style_type [REALISTIC, ANIME] × 2 replicas; "a forbidden fox"
(unsafe: fails) and "a grey wolf" on V_2_TURBO, whose image is remixed by a
`then:` stage; and a remix of one catalog image (a local file, id SKU-7).
Seven images in all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest

MANIFEST = "review"
JOBS = """
- op: generate
  prompt: a red fox
  matrix:
    style_type: [REALISTIC, ANIME]
  repeat: 2
- op: generate
  prompts: ["a forbidden fox", "a grey wolf"]
  model: V_2_TURBO
  then:
    - op: remix
      prompt: "{prompt} in the snow"
- op: remix
  prompt: the fox in winter
  images: {csv: catalog.csv, column: path, id: sku}
"""
UNSAFE_WORD = "forbidden"
IMAGES = 7
JOBS_COUNT = 8


def write_inputs(folder: Path) -> Path:
    """The catalog (one PNG, id SKU-7) and the manifest, in ``folder``; returns the manifest."""
    (folder / "catalog").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), (200, 120, 40)).save(folder / "catalog" / "shoe.png")
    (folder / "catalog.csv").write_text("sku,path\nSKU-7,catalog/shoe.png\n")
    return write_manifest(folder, JOBS, name=MANIFEST)


async def produce(folder: Path, server: FakeServer, **options: Any) -> tuple[int, dict[str, Any]]:
    """Run the review manifest in ``folder`` against ``server`` (which must refuse `UNSAFE_WORD`)."""
    return await run(write_inputs(folder), server, folder, **options)
