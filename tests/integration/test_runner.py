"""`ideobatch run` end to end against the fake server over real sockets (SPEC §6, §7)."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest

PNG_SAMPLE = "sample"


def make_image(
    path: Path, size: tuple[int, int] = (48, 32), color: tuple[int, int, int] = (200, 40, 40)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def ledger_rows(folder: Path, query: str) -> list[tuple]:
    with sqlite3.connect(folder / "ledger.db") as conn:
        return conn.execute(query).fetchall()


def assert_images_on_disk(folder: Path) -> int:
    """Every downloaded image in the ledger exists with its recorded sha256; returns the count."""
    rows = ledger_rows(
        folder, "SELECT local_path, sha256, bytes, width, height FROM images WHERE state = 'downloaded'"
    )
    for path, sha, size, width, height in rows:
        data = Path(path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert len(data) == size
        with Image.open(path) as image:
            assert image.size == (width, height)
    return len(rows)


@pytest.mark.parametrize("kind", ["crazyrouter", "ideogram"])
@pytest.mark.parametrize("source", ["local", "url"])
async def test_every_op_in_both_dialects(
    tmp_path: Path, fake_server: FakeServer, kind: str, source: str
) -> None:
    """generate, remix, upscale and describe all produce the right files and ledger rows."""
    if source == "local":
        image = str(make_image(tmp_path / "src" / "cat.png"))
    else:
        image = f"{fake_server.url}/_assets/sample/cat.png?w=64&h=48"
    manifest = write_manifest(
        tmp_path,
        f"""
        - op: generate
          prompt: "a lighthouse"
          num_images: 2
          aspect_ratio: ASPECT_16_9
        - op: remix
          prompt: "as a watercolor"
          images: ["{image}"]
          image_weight: 40
        - op: upscale
          images: ["{image}"]
          resemblance: 70
        - op: describe
          images: ["{image}"]
        """,
        kind=kind,
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 4, "failed": 0, "withdrawn": 0}
    assert summary["images"]["downloaded"] == 4
    assert assert_images_on_disk(tmp_path) == 4
    with Image.open(next((tmp_path / "out" / "generate").glob("*.png"))) as generated:
        width, height = generated.size
        assert abs(width / height - 16 / 9) < 0.1
    descriptions = ledger_rows(tmp_path, "SELECT text FROM descriptions")
    assert descriptions
    assert all(text for (text,) in descriptions)
    dialect = kind
    assert {(e.dialect, e.op, e.status) for e in fake_server.state.log} == {
        (dialect, op, 200) for op in ("generate", "remix", "upscale", "describe")
    }


async def test_fault_mix_finishes_every_job_without_paying_twice(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """429s (all Retry-After forms), 5xx, truncated downloads, an in-flight cap: all done, none paid twice."""
    # rates high enough that every fault occurs whatever order the calls arrive in (zero
    # truncations among 120 downloads at 3% happened in one run of 40, failing the test)
    fake_server.set_faults(
        rate_429=0.2, retry_after="mixed", rate_5xx=0.15, rate_download_truncate=0.1, inflight_limit=10
    )
    manifest = write_manifest(
        tmp_path,
        """
        - op: generate
          prompts: [p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15, p16, p17, p18, p19, p20]
          matrix:
            aspect_ratio: [ASPECT_1_1, ASPECT_16_9, ASPECT_3_2]
          num_images: 2
        """,
        extra="limits:\n  concurrency: 16\nretry:\n  attempts: 15\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    stats = fake_server.state.stats()
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 60
    assert assert_images_on_disk(tmp_path) == 120
    assert stats["duplicate_billed"] == 0
    assert stats["billed"] == 60
    faults = stats["faults"]
    for fault in ("rate_429", "5xx", "download_truncate"):
        assert faults.get(fault, 0) > 0, faults


async def test_wrong_key_aborts_within_concurrency(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejected key stops the run with exit 3 after at most `concurrency` requests."""
    monkeypatch.setenv("CRAZYROUTER_API_KEY", "wrong-key")
    manifest = write_manifest(
        tmp_path, "- op: generate\n  prompt: x\n  repeat: 200\n", extra="limits:\n  concurrency: 5\n"
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 3
    assert "HTTP 401" in summary["run"]["message"]
    assert len(fake_server.state.log) <= 5
    assert summary["jobs"]["failed"] == 0
    assert summary["jobs"]["pending"] == 200


async def test_unsafe_prompt_fails_only_its_job(tmp_path: Path, fake_server: FakeServer) -> None:
    """A 422 fails its own job with reason `unsafe`; the others succeed; exit 1."""
    fake_server.set_faults(unsafe_word="forbidden")
    manifest = write_manifest(
        tmp_path, "- op: generate\n  prompts: [fine one, a forbidden thing, fine two]\n"
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 1
    assert summary["jobs"]["succeeded"] == 2
    assert summary["failures"] == {"unsafe": 1}
    assert "safety" in summary["failure_examples"]["unsafe"]


async def test_withheld_images_are_billed_and_counted(tmp_path: Path, fake_server: FakeServer) -> None:
    """An image withheld by the safety filter: the job succeeds, the image is counted as withheld."""
    fake_server.set_faults(withheld_word="blurry")
    manifest = write_manifest(
        tmp_path, "- op: generate\n  prompts: [sharp photo, blurry photo]\n  num_images: 2\n"
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert summary["images"]["withheld"] == 2
    assert summary["images"]["downloaded"] == 2
    assert summary["spend_usd"] == pytest.approx(4 * 0.08)


async def test_a_finished_manifest_sends_nothing_again(tmp_path: Path, fake_server: FakeServer) -> None:
    """Running the same manifest after it finished sends zero requests."""
    manifest = write_manifest(tmp_path, "- op: generate\n  prompt: once\n  repeat: 5\n")
    code, _ = await run(manifest, fake_server, tmp_path)
    assert code == 0
    sent = len(fake_server.state.log)
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == sent == 5
    assert summary["run"]["succeeded"] == 0


async def test_edited_manifest_runs_only_the_new_job(tmp_path: Path, fake_server: FakeServer) -> None:
    """Changing one prompt re-runs that job only; the others keep their results."""
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one, two, three]\n")
    await run(manifest, fake_server, tmp_path)
    write_manifest(tmp_path, "- op: generate\n  prompts: [one, two, three, four]\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == 4
    assert summary["jobs"]["succeeded"] == 4


async def test_rate_limit_lowers_concurrency(tmp_path: Path, fake_server: FakeServer) -> None:
    """With the server's in-flight cap at 4 images, every job still finishes (AIMD backs off)."""
    fake_server.set_faults(inflight_limit=4, latency_ms=30)
    manifest = write_manifest(
        tmp_path,
        "- op: generate\n  prompt: busy\n  repeat: 40\n",
        extra="limits:\n  concurrency: 12\nretry:\n  attempts: 30\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 40
    assert fake_server.state.stats()["max_inflight_images"] <= 4


async def test_concurrency_counts_images_not_requests(tmp_path: Path, fake_server: FakeServer) -> None:
    """concurrency 8 with 4-image requests keeps at most 8 images (2 requests) in flight."""
    fake_server.set_faults(latency_ms=40)
    manifest = write_manifest(
        tmp_path,
        "- op: generate\n  prompt: quad\n  num_images: 4\n  repeat: 12\n",
        extra="limits:\n  concurrency: 8\n",
    )
    code, _summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert fake_server.state.stats()["max_inflight_images"] == 8


async def test_unchanged_manifest_is_not_planned_again(
    tmp_path: Path, fake_server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A re-run with nothing changed skips validation and expansion; a changed input re-plans."""
    caplog.set_level(logging.INFO, logger="ideobatch")
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: p.txt\n")
    await run(manifest, fake_server, tmp_path)
    assert "planned t: 2 job(s), 2 new" in caplog.text
    caplog.clear()
    code, _ = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert "t: nothing changed since the last plan" in caplog.text
    caplog.clear()
    prompts.write_text("one\ntwo\nthree\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    assert "planned t: 3 job(s), 1 new" in caplog.text
    assert summary["jobs"]["succeeded"] == 3
    assert len(fake_server.state.log) == 3
