"""A run that gets nothing but 429s stops after `retry.give_up_after`, saying so in words (SPEC §11)."""

from __future__ import annotations

from pathlib import Path

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest


async def test_a_run_refused_by_429s_for_give_up_after_stops_with_a_readable_duration(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Exit 3, "for 1 s the provider answered nothing but 429" (it was "for 0.0166667 min")."""
    fake_server.set_faults(rate_429=1.0)
    manifest = write_manifest(
        tmp_path, "- op: generate\n  prompts: [a, b]\n", extra="retry:\n  give_up_after: 1s\n"
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 3, summary
    message = summary["run"]["message"]
    assert "for 1 s the provider answered nothing but 429" in message, message
    assert fake_server.state.stats()["billed"] == 0
