"""Bad Ideogram 3.0 inputs: `ideobatch run` exits 2 with `file:line: field: message`, and sends nothing."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.fake_server import FakeServer

HEAD = "version: 1\nname: bad\nprovider:\n  kind: ideogram\n"


def picture(path: Path, size: tuple[int, int], pad: int = 0) -> None:
    """A small PNG of ``size`` (``pad`` zero bytes appended: a valid image of a chosen file size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 160)).save(path)
    if pad:
        with path.open("ab") as handle:
            handle.truncate(path.stat().st_size + pad)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Sources, masks and references of every case."""
    picture(tmp_path / "img" / "a.png", (48, 32))
    picture(tmp_path / "img" / "sq.png", (40, 40))
    picture(tmp_path / "masks" / "a.png", (32, 32))
    picture(tmp_path / "refs" / "s1.png", (16, 16))
    picture(tmp_path / "refs" / "c1.png", (20, 20))
    picture(tmp_path / "refs" / "c2.png", (20, 20))
    picture(tmp_path / "refs" / "cm.png", (10, 10))
    picture(tmp_path / "refs" / "big1.png", (8, 8), pad=6 * 1024 * 1024)
    picture(tmp_path / "refs" / "big2.png", (8, 8), pad=6 * 1024 * 1024)
    (tmp_path / "cat.csv").write_text("sku,image,mask\nA1,img/a.png,masks/a.png\n")
    return tmp_path


# (case id, jobs/defaults YAML after the head, expected "line: field: message" fragment)
CASES = [
    (
        "aspect-xor-resolution",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    aspect_ratio: 16x9\n    resolution: 1312x736\n",
        ":9: jobs[0].resolution: `aspect_ratio` and `resolution` cannot be combined",
    ),
    (
        "style-codes-and-references",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    style_codes: [AAFF5733]\n"
        "    style_reference_images: [refs/s1.png]\n",
        ":8: jobs[0].style_codes: `style_codes` cannot be combined with `style_reference_images`",
    ),
    (
        "style-codes-and-style-type",
        "jobs:\n  - op: v3-remix\n    prompt: x\n    images: [img/a.png]\n    style_codes: [AAFF5733]\n"
        "    style_type: REALISTIC\n",
        ":9: jobs[0].style_codes: `style_codes` cannot be combined with `style_type`",
    ),
    (
        "two-character-references",
        "jobs:\n  - op: v3-generate\n    prompt: x\n"
        "    character_reference_images: [refs/c1.png, refs/c2.png]\n",
        ":8: jobs[0].character_reference_images: 2 files; v3-generate takes at most 1",
    ),
    (
        "character-mask-without-reference",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    character_reference_images_mask: [refs/cm.png]\n",
        ":8: jobs[0].character_reference_images_mask: 1 file(s) for 0 `character_reference_images`",
    ),
    (
        "character-mask-of-another-size",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    character_reference_images: [refs/c1.png]\n"
        "    character_reference_images_mask: [refs/cm.png]\n",
        ":9: jobs[0].character_reference_images_mask[0]: refs/cm.png: 10x10, but refs/c1.png is 20x20",
    ),
    (
        "reference-set-over-10-mb",
        "defaults:\n  style_reference_images: [refs/big1.png, refs/big2.png]\n"
        "jobs:\n  - op: v3-generate\n    prompt: x\n",
        ":6: defaults.style_reference_images: 2 files of 12583",
    ),
    (
        "mask-of-another-size",
        "jobs:\n  - op: v3-edit\n    prompt: x\n    images: [img/a.png]\n    mask: masks/{stem}.png\n",
        ":9: jobs[0].mask: masks/a.png: 32x32, but img/a.png is 48x32: a mask has the size of its image",
    ),
    (
        "mask-of-another-size-in-a-catalog",
        "jobs:\n  - op: v3-edit\n    prompt: x\n"
        "    images: {csv: cat.csv, column: image, id: sku, mask: mask}\n",
        "cat.csv:2: mask: masks/a.png: 32x32, but img/a.png is 48x32",
    ),
    (
        "missing-mask",
        "jobs:\n  - op: v3-edit\n    prompt: x\n    images: [img/a.png]\n",
        ":6: jobs[0]: v3-edit needs `mask`",
    ),
    (
        "mask-that-does-not-exist",
        "jobs:\n  - op: v3-edit\n    prompt: x\n    images: [img/sq.png]\n    mask: masks/{stem}-m.png\n",
        ":9: jobs[0].mask: masks/sq-m.png: no such file",
    ),
    (
        "non-square-reframe-source",
        "jobs:\n  - op: v3-reframe\n    images: [img/a.png]\n    resolution: 1312x736\n",
        ":7: jobs[0].images: img/a.png: 48x32 is not square; v3-reframe takes square images",
    ),
    (
        "flash-on-transparent",
        "jobs:\n  - op: v3-generate-transparent\n    prompt: x\n    rendering_speed: FLASH\n",
        ":8: jobs[0].rendering_speed: FLASH is not available with a transparent background",
    ),
    (
        "unknown-field",
        "jobs:\n  - op: v3-replace-background\n    prompt: x\n"
        "    images: [img/a.png]\n    style_type: AUTO\n",
        ":9: jobs[0].style_type: not a field this op takes",
    ),
    (
        "legacy-aspect-spelling",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    aspect_ratio: ASPECT_16_9\n",
        ":8: jobs[0].aspect_ratio: 'ASPECT_16_9' is not one of 1x3, 3x1",
    ),
    (
        "local-reference-with-url-encoding",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    style_reference_images: [refs/s1.png]\n",
        ":9: jobs[0].style_reference_images[0]: refs/s1.png: image_encoding `url` sends every file as a URL",
    ),
    (
        "mask-on-a-chained-stage",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    then:\n      - op: v3-edit\n        prompt: y\n"
        "        mask: masks/{stem}.png\n",
        ":11: jobs[0].then[0].mask: a `then:` stage's images come from its parent",
    ),
    (
        "edit-as-a-chained-stage",
        "jobs:\n  - op: v3-generate\n    prompt: x\n    then:\n      - op: v3-edit\n        prompt: y\n",
        ":9: jobs[0].then[0]: v3-edit needs a `mask` per image: it cannot be a `then:` stage",
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_v3_inputs_exit_2_before_anything_is_sent(
    folder: Path, fake_server: FakeServer, body: str, expected: str
) -> None:
    """Each cross-field rule and file rule is a validation error: exit 2, its line and field, no request."""
    head = HEAD + (
        "  image_encoding: url\n" if "url-encoding" in expected or "url` sends" in expected else ""
    )
    manifest = folder / "bad.yaml"
    manifest.write_text(head + textwrap.dedent(body))
    args = ["run", str(manifest), "--ledger", f"sqlite:///{folder}/l.db", "--base-url", fake_server.url]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert fake_server.state.log == []
