"""Every recipe in examples/ and the demo manifest run as written against the fake server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [
    ROOT / "examples" / "catalog-upscale" / "manifest.yaml",
    ROOT / "examples" / "describe-generate" / "manifest.yaml",
    ROOT / "examples" / "cron" / "nightly.yaml",
    ROOT / "jobs" / "demo.yaml",
]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.parent.name + "/" + p.name)
async def test_recipe_runs_against_the_fake_server(
    tmp_path: Path, fake_server: FakeServer, manifest: Path
) -> None:
    """The recipe validates, runs to exit 0, and a second run sends nothing."""
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] >= 2
    assert summary["jobs"]["failed"] == 0
    sent = len(fake_server.state.log)
    code, _ = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == sent
