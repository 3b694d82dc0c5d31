"""Hostile input from the manifest, the catalog and the network is refused cleanly (SPEC §4, §6)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from pipeline import downloads, retrying
from pipeline.errors import ManifestError
from pipeline.fake_server import FakeServer
from pipeline.planning import save_plan
from tests.integration.conftest import run, run_saved_plan, write_manifest


def image_rows(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "ledger.db") as conn:
        return conn.execute("SELECT state, local_path, error FROM images ORDER BY id").fetchall()


def all_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


async def test_catalog_ids_cannot_escape_the_output_folder(tmp_path: Path, fake_server: FakeServer) -> None:
    """Catalog ids like ../../x or /etc become plain names inside the output folder."""
    for i, name in enumerate(("a", "b", "c")):
        Image.new("RGB", (20, 20), (i, i, i)).save(tmp_path / f"{name}.png")
    (tmp_path / "catalog.csv").write_text("sku,path\n../../escaped,a.png\n/etc/passwd,b.png\n..,c.png\n")
    manifest = write_manifest(
        tmp_path,
        "- op: upscale\n  images: {csv: catalog.csv, column: path, id: sku}\n",
        extra='output:\n  name: "{id}/{id}-{slug}.{ext}"\n',
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    out = (tmp_path / "out").resolve()
    paths = [Path(p) for state, p, _ in image_rows(tmp_path) if state == "downloaded"]
    assert len(paths) == 3
    for path in paths:
        assert path.resolve().is_relative_to(out)
    assert not (tmp_path.parent / "escaped").exists()


async def test_symlink_in_the_output_folder_is_not_followed(tmp_path: Path, fake_server: FakeServer) -> None:
    """A symlink planted where images go (pointing outside) is refused; nothing is written outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "generate")
    manifest = write_manifest(tmp_path, "- op: generate\n  prompt: sneaky\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 1
    assert summary["failures"] == {"download_failed": 1}
    assert "unsafe output path" in summary["failure_examples"]["download_failed"]
    assert all_files(outside) == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"rate_download_html": 1.0}, "not a PNG, JPEG or WebP"),
        pytest.param(
            {"rate_download_bomb": 1.0},
            "decompression bomb",
            # Pillow only warns at this size: the protection must be ours, not pytest's warning filter
            marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
        ),
        ({"download_oversize_bytes": 300_000}, "byte cap"),
    ],
    ids=["html-body", "decompression-bomb", "over-the-cap"],
)
async def test_bad_downloads_are_refused_and_leave_no_file(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, fault: dict, expected: str
) -> None:
    """An HTML page, a decompression bomb or an oversized body is never saved; the job fails, paid once."""
    monkeypatch.setattr(downloads, "MAX_IMAGE_BYTES", 200_000)
    fake_server.set_faults(**fault)
    manifest = write_manifest(tmp_path, "- op: generate\n  prompt: bait\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 1
    assert summary["failures"] == {"download_failed": 1}
    assert expected in summary["failure_examples"]["download_failed"]
    assert all_files(tmp_path / "out") == []
    assert fake_server.state.stats()["billed"] == 1


async def test_truncated_downloads_are_retried_without_paying_again(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A download cut short is fetched again from the same URL; the API is not called twice.

    Half of all downloads are cut short, so which image meets which fault depends
    on the order of requests; what holds in every order is checked: every image
    is fetched until it arrives whole or its tries are spent, and nothing is
    paid twice.
    """
    fake_server.set_faults(rate_download_truncate=0.5, seed=11)
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [a, b, c, d, e, f]\n  num_images: 2\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    stats = fake_server.state.stats()
    truncated = stats["faults"]["download_truncate"]
    assert truncated > 0
    assert stats["billed"] == 6
    downloaded, failed = summary["images"]["downloaded"], summary["images"]["failed"]
    assert downloaded + failed == 12
    assert downloaded == stats["downloads_served"] == len(all_files(tmp_path / "out"))
    # each image was asked for once, plus once more after each cut-short body
    assert stats["downloads"] == 12 + truncated - failed
    assert truncated >= failed * retrying.DOWNLOAD_ATTEMPTS
    assert code == (1 if failed else 0)
    assert summary["jobs"]["failed"] <= failed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>not an image</html>", "not a JPEG, PNG or WebP image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024 + 1), "the API takes at most"),
    ],
    ids=["not-an-image", "over-10-mb"],
)
async def test_bad_source_files_are_refused_before_anything_is_sent(
    tmp_path: Path, fake_server: FakeServer, content: bytes, message: str
) -> None:
    """A source file that is not an image, or over 10 MB, is a validation error: exit 2, nothing sent."""
    (tmp_path / "src.png").write_bytes(content)
    manifest = write_manifest(tmp_path, "- op: remix\n  prompt: x\n  images: [src.png]\n")
    with pytest.raises(ManifestError) as caught:
        await run(manifest, fake_server, tmp_path)
    assert message in str(caught.value)
    assert fake_server.state.log == []


async def test_a_source_that_changed_after_planning_is_not_sent(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A local source whose bytes changed since planning fails its job instead of paying for another image."""
    source = tmp_path / "src.png"
    Image.new("RGB", (20, 20), (1, 1, 1)).save(source)
    manifest = write_manifest(tmp_path, "- op: upscale\n  images: [src.png]\n")
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    await save_plan(str(manifest), ledger, None)
    Image.new("RGB", (20, 20), (9, 9, 9)).save(source)
    result = await run_saved_plan(manifest, ledger, fake_server)
    assert result.tally.failures == {"source_changed": 1}
    assert fake_server.state.log == []
