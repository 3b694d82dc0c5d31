"""Every Ideogram 3.0 op end to end over real sockets, in both dialects, with local files and with URLs.

One manifest holds every op: a v3-generate matrix over rendering_speed ×
style_preset, a v3-generate with two style references, a v3-remix with a
character reference (and its mask), v3-edit whose masks come from a template
and from a catalog column (with repeated ``style_codes`` and a JSON
``color_palette``), v3-reframe, v3-replace-background with two style
references, and v3-generate-transparent. Each run checks what the fake
server logged for every call (path, fields, parts, file hashes), what it
billed, and what landed on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.downloads import Downloader
from pipeline.errors import BadImage
from pipeline.fake_server import FakeServer, LogEntry
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import sample_url
from tests.integration.conftest import run

#: name, size and format of every file the manifest uses
FILES = {
    "square": ((40, 40), "png"),
    "wide": ((64, 40), "png"),
    "square-mask": ((40, 40), "png"),
    "wide-mask": ((64, 40), "png"),
    "s1": ((16, 16), "png"),
    "s2": ((16, 16), "jpeg"),
    "face": ((24, 24), "png"),
    "face-mask": ((24, 24), "png"),
}
EXT = {"png": "png", "jpeg": "jpg"}
#: USD the run costs: matrix 2 x TURBO + 2 x QUALITY, generate with style references, remix at the
#: character DEFAULT tier, 4 edits, reframe, replace-background at DEFAULT, transparent TURBO
EXPECTED_USD = 2 * 0.03 + 2 * 0.09 + 0.06 + 0.15 + 4 * 0.06 + 0.06 + 0.06 + 0.04
NATIVE_PATHS = {
    "v3-generate": "/v1/ideogram-v3/generate",
    "v3-remix": "/v1/ideogram-v3/remix",
    "v3-edit": "/v1/ideogram-v3/inpaint",
    "v3-reframe": "/v1/ideogram-v3/reframe",
    "v3-replace-background": "/v1/ideogram-v3/replace-background",
    "v3-generate-transparent": "/v1/ideogram-v3/generate-transparent",
}
PROXY_PATHS = {op: "/ideogram" + path for op, path in NATIVE_PATHS.items()}
PROXY_PATHS["v3-edit"] = "/ideogram/v1/ideogram-v3/edit"


@dataclass
class Files:
    """Where each file is (a path as written in the manifest, or a URL) and its sha256."""

    where: dict[str, str] = field(default_factory=dict)
    sha: dict[str, str] = field(default_factory=dict)


def make_files(folder: Path, base_url: str | None) -> Files:
    """The files as local files (``base_url`` None) or as the fake server's sample URLs."""
    files = Files()
    for name, ((width, height), fmt) in FILES.items():
        data = render_sample(name, width, height, fmt)  # type: ignore[arg-type]
        files.sha[name] = hashlib.sha256(data).hexdigest()
        if base_url is None:
            path = folder / "files" / f"{name}.{EXT[fmt]}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files.where[name] = f"files/{name}.{EXT[fmt]}"
        else:
            files.where[name] = sample_url(base_url, name, width, height, EXT[fmt])
    return files


def manifest_text(files: Files, kind: str, encoding: str) -> str:
    """Every V3 op, its files given as ``files`` says."""
    w = files.where
    local = not w["square"].startswith("http")
    template = "files/{stem}-mask.png" if local else w["square-mask"].replace("square-mask", "{stem}-mask")
    return f"""version: 1
name: v3
provider:
  kind: {kind}
  image_encoding: {encoding}
defaults:
  rendering_speed: DEFAULT
jobs:
  - op: v3-generate
    prompt: a poster of a lighthouse
    matrix:
      rendering_speed: [TURBO, QUALITY]
      style_preset: [BAUHAUS, WATERCOLOR]
  - op: v3-generate
    prompt: a poster in these styles
    aspect_ratio: 16x9
    style_reference_images: ["{w["s1"]}", "{w["s2"]}"]
  - op: v3-remix
    prompt: the hero on a bicycle
    images: ["{w["square"]}"]
    character_reference_images: ["{w["face"]}"]
    character_reference_images_mask: ["{w["face-mask"]}"]
    image_weight: 70
  - op: v3-edit
    prompt: a red door
    images: ["{w["square"]}"{', "' + w["wide"] + '"' if local else ""}]
    mask: "{template}"
    style_codes: [AAFF5733, 0133FF57]
    color_palette: {{name: PASTEL}}
  - op: v3-edit
    prompt: a blue door
    images: {{csv: catalog.csv, column: image, id: sku, mask: mask}}
  - op: v3-reframe
    images: ["{w["square"]}"]
    resolution: 1312x736
  - op: v3-replace-background
    prompt: a beach at dawn
    images: ["{w["square"]}"]
    style_reference_images: ["{w["s1"]}", "{w["s2"]}"]
  - op: v3-generate-transparent
    prompt: a logo of a fox
    rendering_speed: TURBO
    upscale_factor: X2
"""


def write_catalog(folder: Path, files: Files) -> None:
    """A catalog CSV whose rows name each image and its mask (relative paths: to the CSV)."""
    w = files.where
    rows = [("E1", w["square"], w["square-mask"]), ("E2", w["wide"], w["wide-mask"])]
    (folder / "catalog.csv").write_text("sku,image,mask\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))


def by_op(log: list[LogEntry]) -> dict[str, list[LogEntry]]:
    """The log's entries per op."""
    found: dict[str, list[LogEntry]] = {}
    for entry in log:
        found.setdefault(entry.op, []).append(entry)
    return found


CASES = [
    pytest.param("ideogram", "local", "auto", id="native-local"),
    pytest.param("crazyrouter", "local", "auto", id="proxy-local"),
    pytest.param("ideogram", "url", "auto", id="native-urls-downloaded"),
    pytest.param("crazyrouter", "url", "url", id="proxy-urls-as-json"),
]


@pytest.mark.usefixtures("api_key")
@pytest.mark.parametrize(("kind", "source", "encoding"), CASES)
async def test_every_v3_op_runs_and_sends_what_the_api_takes(
    tmp_path: Path, fake_server: FakeServer, kind: str, source: str, encoding: str
) -> None:
    """Paths, fields, repeated parts and file hashes per op as logged; billed at each op's tier."""
    files = make_files(tmp_path, fake_server.url if source == "url" else None)
    write_catalog(tmp_path, files)
    manifest = tmp_path / "v3.yaml"
    manifest.write_text(manifest_text(files, kind, encoding))
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    log = by_op(fake_server.state.log)
    jobs = 4 + 1 + 1 + (4 if source == "local" else 3) + 1 + 1 + 1
    assert summary["jobs"]["succeeded"] == jobs
    assert all(e.status == 200 and e.billed for entries in log.values() for e in entries)
    paths = NATIVE_PATHS if kind == "ideogram" else PROXY_PATHS
    assert {op: {e.path for e in entries} for op, entries in log.items()} == {
        op: {paths[op]} for op in NATIVE_PATHS
    }
    multipart = "json" if encoding == "url" else "multipart"
    sha = files.sha

    matrix = [e for e in log["v3-generate"] if not e.files]
    assert sorted(
        (e.fields or {})["rendering_speed"] + "/" + (e.fields or {})["style_preset"] for e in matrix
    ) == [
        "QUALITY/BAUHAUS",
        "QUALITY/WATERCOLOR",
        "TURBO/BAUHAUS",
        "TURBO/WATERCOLOR",
    ]
    assert {e.encoding for e in matrix} == {"json"}
    assert sorted(float(e.cost) for e in matrix) == pytest.approx([0.03, 0.03, 0.09, 0.09])

    [styled] = [e for e in log["v3-generate"] if e.files]
    assert styled.encoding == multipart
    assert styled.files == {"style_reference_images": (sha["s1"], sha["s2"])}
    assert (styled.fields or {})["aspect_ratio"] == "16x9"

    [remix] = log["v3-remix"]
    assert remix.files == {
        "image": (sha["square"],),
        "character_reference_images": (sha["face"],),
        "character_reference_images_mask": (sha["face-mask"],),
    }
    assert float(remix.cost) == pytest.approx(0.15)  # the character reference tier at DEFAULT
    assert (remix.fields or {})["image_weight"] == 70

    edits = log["v3-edit"]
    pairs = {(e.files["image"], e.files["mask"]) for e in edits}
    expected_pairs = {((sha["square"],), (sha["square-mask"],)), ((sha["wide"],), (sha["wide-mask"],))}
    assert pairs == expected_pairs
    [templated, *_] = [e for e in edits if (e.fields or {}).get("style_codes")]
    assert (templated.fields or {})["style_codes"] == ["AAFF5733", "0133FF57"]
    assert (templated.fields or {})["color_palette"] == {"name": "PASTEL"}
    if multipart == "multipart":  # a list as repeated parts, the palette as one JSON part
        assert Counter(templated.parts) == {
            "prompt": 1,
            "rendering_speed": 1,
            "style_codes": 2,
            "color_palette": 1,
            "image": 1,
            "mask": 1,
        }
        assert Counter(styled.parts) == {
            "prompt": 1,
            "rendering_speed": 1,
            "aspect_ratio": 1,
            "style_reference_images": 2,
        }
    else:  # the proxy's JSON form: every file field a URL (a list for a list)
        assert set(templated.parts) == {
            "prompt",
            "rendering_speed",
            "style_codes",
            "color_palette",
            "image",
            "mask",
        }

    [reframe] = log["v3-reframe"]
    assert reframe.files == {"image": (sha["square"],)}
    assert (reframe.fields or {})["resolution"] == "1312x736"

    [background] = log["v3-replace-background"]
    assert background.files == {"image": (sha["square"],), "style_reference_images": (sha["s1"], sha["s2"])}

    [transparent] = log["v3-generate-transparent"]
    assert transparent.encoding == "json"
    assert transparent.fields == {
        "prompt": "a logo of a fox",
        "rendering_speed": "TURBO",
        "upscale_factor": "X2",
    }
    assert float(transparent.cost) == pytest.approx(0.04)  # TURBO_X2: the surcharge is unknown
    [picture] = (tmp_path / "out" / "v3-generate-transparent").glob("*.png")
    with Image.open(picture) as image:
        assert image.mode == "RGBA"
    [reframed] = (tmp_path / "out" / "v3-reframe").glob("*.png")
    with Image.open(reframed) as image:
        assert image.size == (82, 46)  # 1312x736 served at 1/16

    stats = fake_server.state.stats()
    expected = EXPECTED_USD - (0.06 if source == "url" else 0.0)  # one edit fewer with URLs
    assert stats["billed_usd"] == pytest.approx(expected)
    assert summary["spend_usd"] == pytest.approx(stats["billed_usd"])
    assert stats["duplicate_billed"] == 0


@pytest.mark.usefixtures("api_key")
async def test_status_spend_equals_what_the_server_billed_on_a_mixed_tier_run(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """`status --json` spend is the fake server's billed total over legacy, V3 and character tiers."""
    files = make_files(tmp_path, None)
    write_catalog(tmp_path, files)
    text = manifest_text(files, "ideogram", "auto") + (
        "  - op: generate\n    prompt: a legacy poster\n    model: V_2_TURBO\n    num_images: 2\n"
    )
    (tmp_path / "mixed.yaml").write_text(text)
    code, _summary = await run(tmp_path / "mixed.yaml", fake_server, tmp_path)
    assert code == 0
    args = ["status", "v3", "--ledger", f"sqlite:///{tmp_path}/ledger.db", "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    spend = json.loads(result.output)["spend_usd"]
    assert spend == pytest.approx(fake_server.state.stats()["billed_usd"])
    assert spend == pytest.approx(EXPECTED_USD + 2 * 0.05)


async def test_a_transparent_image_must_be_an_rgba_png(
    tmp_path: Path, fake_server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """A download asked to be transparent refuses a PNG without an alpha channel as a bad image."""
    downloader = Downloader(http, tmp_path)
    url = sample_url(fake_server.url, "opaque", 16, 16)
    with pytest.raises(BadImage, match="not an RGBA PNG"):
        await downloader.fetch(url, tmp_path / "opaque", rgba=True)
    assert list(tmp_path.iterdir()) == []
    saved = await downloader.fetch(url, tmp_path / "opaque")
    assert saved.kind == "png"
