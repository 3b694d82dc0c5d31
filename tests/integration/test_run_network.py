"""Whole runs against a server that writes every response in pieces, or slowly (SPEC §6)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest
from tests.integration.elsewhere import Elsewhere
from tests.integration.test_runner import assert_images_on_disk, ledger_rows, make_image


@pytest.mark.parametrize("kind", ["crazyrouter", "ideogram"])
async def test_every_op_with_every_response_in_pieces_is_billed_once(
    tmp_path: Path, fake_server: FakeServer, kind: str
) -> None:
    """split_writes on every answer, image and source: all jobs succeed, each billed once, images valid."""
    fake_server.set_faults(split_writes=1.0)
    local = make_image(tmp_path / "src" / "cat.png", (64, 48))
    url = f"{fake_server.url}/_assets/sample/dog.png?w=64&h=48"
    manifest = write_manifest(
        tmp_path,
        f"""
        - op: generate
          prompt: "a lighthouse"
          num_images: 2
        - op: remix
          prompt: "as a watercolor"
          images: ["{local}", "{url}"]
        - op: upscale
          images: ["{local}", "{url}"]
        - op: describe
          images: ["{local}", "{url}"]
        """,
        kind=kind,
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 7, "failed": 0, "withdrawn": 0}
    assert summary["in_doubt"] == 0
    log = fake_server.state.log
    assert [(e.status, e.billed, e.fault) for e in log] == [(200, True, None)] * 7
    assert Counter(e.op for e in log) == {"generate": 1, "remix": 2, "upscale": 2, "describe": 2}
    assert len({e.request_hash for e in log}) == 7
    stats = fake_server.state.stats()
    assert (stats["billed"], stats["duplicate_billed"]) == (7, 0)
    assert assert_images_on_disk(tmp_path) == 6
    assert len(ledger_rows(tmp_path, "SELECT text FROM descriptions")) >= 2


async def test_a_download_past_the_manifests_deadline_fails_the_image_without_paying_again(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """timeouts.download bounds each download: a trickling image fails download_failed, billed once."""
    fake_server.set_faults(trickle_bps=2000, download_oversize_bytes=20_000)  # 10 s of image
    manifest = write_manifest(
        tmp_path, "- op: generate\n  prompt: slow\n", extra="timeouts:\n  download: 100ms\n"
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 1, summary
    assert summary["failures"] == {"download_failed": 1}
    assert "deadline of 0.1 s passed" in summary["failure_examples"]["download_failed"]
    assert fake_server.state.stats()["billed"] == 1
    assert fake_server.state.stats()["downloads"] == 5  # retried in place, the API not called again


async def test_an_api_that_redirects_the_paid_call_is_not_followed(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A 307 on the API call stops the run (exit 3): the request and the key are not sent on."""
    async with Elsewhere() as proxy:
        proxy.post_target = fake_server.url
        manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [a, b, c]\n")
        code, summary = await run(manifest, fake_server, tmp_path, base_url=proxy.url)
    assert code == 3, summary
    assert "redirects" in summary["run"]["message"]
    assert fake_server.state.stats()["requests"] == 0
