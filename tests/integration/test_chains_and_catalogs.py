"""Chained stages and catalog reprocessing against the fake server (SPEC §4 `then:`, §1)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from PIL import Image

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest


def rows(folder: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(folder / "ledger.db") as conn:
        return conn.execute(sql).fetchall()


def catalog_images(folder: Path, count: int, start: int = 0) -> list[Path]:
    paths = []
    for i in range(start, start + count):
        path = folder / "catalog" / f"item-{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 30), (i * 7 % 256, 80, 160)).save(path)
        paths.append(path)
    return paths


async def test_describe_then_generate_one_child_per_description(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """describe 5 images (one description each): 5 generate jobs, each prompted by its description."""
    fake_server.set_faults(descriptions_per_image=1)
    catalog_images(tmp_path, 5)
    manifest = write_manifest(
        tmp_path,
        """
        - op: describe
          images: "catalog/*.png"
          then:
            - op: generate
              prompt: "{description}, studio lighting"
              model: V_2_TURBO
        """,
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    descriptions = [text for (text,) in rows(tmp_path, "SELECT text FROM descriptions")]
    assert len(descriptions) == 5
    assert summary["by_op"]["describe"]["succeeded"] == 5
    assert summary["by_op"]["generate"]["succeeded"] == len(descriptions)
    prompts = [
        p
        for (p,) in rows(tmp_path, "SELECT json_extract(request, '$.prompt') FROM jobs WHERE op = 'generate'")
    ]
    assert sorted(prompts) == sorted(f"{text}, studio lighting" for text in descriptions)
    parents = rows(tmp_path, "SELECT count(*) FROM jobs WHERE op = 'generate' AND parent_id IS NOT NULL")
    assert parents == [(len(descriptions),)]


async def test_generate_then_upscale_each_image(tmp_path: Path, fake_server: FakeServer) -> None:
    """generate 3 then upscale: each produced image becomes the source of one upscale job."""
    manifest = write_manifest(
        tmp_path,
        """
        - op: generate
          prompts: [a fox, a hare, an owl]
          then:
            - op: upscale
              resemblance: 80
        """,
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert summary["by_op"]["upscale"]["succeeded"] == 3
    sources = rows(
        tmp_path,
        "SELECT c.source, i.local_path FROM jobs c JOIN images i ON i.job_id = c.parent_id "
        "WHERE c.op = 'upscale'",
    )
    assert len(sources) == 3
    assert all(source == path for source, path in sources)
    assert sum(1 for e in fake_server.state.log if e.op == "upscale") == 3


async def test_rerun_of_a_chain_sends_nothing(tmp_path: Path, fake_server: FakeServer) -> None:
    """Children keep their keys: a finished chained manifest run again sends no request."""
    manifest = write_manifest(
        tmp_path,
        "- op: generate\n  prompt: seed image\n  num_images: 2\n"
        "  then:\n    - op: remix\n      prompt: '{prompt} at night'\n",
    )
    await run(manifest, fake_server, tmp_path)
    sent = len(fake_server.state.log)
    assert sent == 3
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == sent
    assert summary["jobs"]["succeeded"] == 3


async def test_catalog_rerun_processes_only_new_rows(tmp_path: Path, fake_server: FakeServer) -> None:
    """Catalog CSV run, 10 rows added: the re-run sends exactly 10 requests; a changed file is new work."""
    images = catalog_images(tmp_path, 25)
    lines = ["sku,path"] + [f"SKU-{i},catalog/{p.name}" for i, p in enumerate(images[:15])]
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    manifest = write_manifest(
        tmp_path,
        "- op: upscale\n  images: {csv: catalog.csv, column: path, id: sku}\n",
        extra='output:\n  name: "{id}/{slug}.{ext}"\n',
    )
    code, _ = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == 15
    lines += [f"SKU-{i},catalog/{p.name}" for i, p in enumerate(images[15:], start=15)]
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == 25
    assert summary["jobs"]["succeeded"] == 25
    assert (tmp_path / "out" / "SKU-20").is_dir()
    Image.new("RGB", (33, 33), (1, 2, 3)).save(images[0])  # the file changed: new bytes, new work
    code, _ = await run(manifest, fake_server, tmp_path)
    assert len(fake_server.state.log) == 26


async def test_two_descriptions_give_two_children(tmp_path: Path, fake_server: FakeServer) -> None:
    """When describe answers with two descriptions, the stage gets one child job per description."""
    fake_server.set_faults(descriptions_per_image=2)
    catalog_images(tmp_path, 1)
    manifest = write_manifest(
        tmp_path,
        "- op: describe\n  images: 'catalog/*.png'\n"
        "  then:\n    - op: generate\n      prompt: '{description}'\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert summary["by_op"]["generate"]["succeeded"] == 2
