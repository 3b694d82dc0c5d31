"""A v4-describe → v4-generate chain killed mid-way resumes without planning or paying twice (SPEC §10)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
from collections import Counter
from pathlib import Path

from PIL import Image

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import ideobatch, manifest_for, start, succeeded

KILL_SEED = 20261207
PHOTOS = 8
CHAIN = """  - op: v4-describe
    images: "photos/*.png"
    include_style_descriptions: true
    then:
      - op: v4-generate
        json_prompt: "{json_prompt}"
        json_prompt_overrides:
          style_description: {art_style: watercolor illustration}
        rendering_speed: TURBO
"""


def unanswered_attempts(folder: Path) -> int:
    """Requests recorded as sent with no outcome: what a resume must count in doubt."""
    with sqlite3.connect(folder / "ledger.db", timeout=10) as conn:
        return int(
            conn.execute("SELECT count(*) FROM attempts WHERE sent AND ended_at IS NULL").fetchone()[0]
        )


async def test_a_killed_v4_chain_resumes_without_planning_or_paying_twice(
    tmp_path: Path, server: FakeServer
) -> None:
    """SIGKILL at a random moment, then a resume: all done, one child per describe, re-sends in doubt."""
    rnd = random.Random(KILL_SEED)
    (tmp_path / "photos").mkdir()
    for i in range(PHOTOS):
        Image.new("RGB", (24 + i, 16), (20 * i, 90, 200 - 10 * i)).save(tmp_path / "photos" / f"p{i:02}.png")
    server.set_faults(latency_ms=80, latency_jitter_ms=40)
    manifest = manifest_for(tmp_path, server, CHAIN, extra="limits:\n  concurrency: 4\n")
    args = (
        "run",
        str(manifest),
        "--ledger",
        f"sqlite:///{tmp_path}/ledger.db",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )
    process = await start(*args, cwd=tmp_path)
    # among the describes or their children, with at least two rounds of calls still to make
    target = rnd.randint(3, 2 * PHOTOS - 6)
    while succeeded(tmp_path) < target:
        assert process.returncode is None, "the run ended before the kill"
        await asyncio.sleep(0.01)
    await asyncio.sleep(rnd.uniform(0, 0.06))  # anywhere in a call, a download or a commit
    with contextlib.suppress(ProcessLookupError):  # a run that ended first is a kill at its very end
        process.send_signal(signal.SIGKILL)
    await process.wait()
    in_flight = unanswered_attempts(tmp_path)
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["by_op"]["v4-describe"]["succeeded"] == PHOTOS
    assert summary["by_op"]["v4-generate"]["succeeded"] == PHOTOS
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        children = Counter(
            parent for (parent,) in conn.execute("SELECT parent_id FROM jobs WHERE parent_id IS NOT NULL")
        )
        describes = {job for (job,) in conn.execute("SELECT id FROM jobs WHERE op = 'v4-describe'")}
        styles = [
            json.loads(r)["json_prompt"]["style_description"]
            for (r,) in conn.execute("SELECT request FROM jobs WHERE op = 'v4-generate'")
        ]
    assert set(children) == describes
    assert set(children.values()) == {1}  # no child planned twice
    assert {style["art_style"] for style in styles} == {"watercolor illustration"}
    stats = server.state.stats()
    duplicates = stats["duplicate_billed"]
    assert stats["billed"] == 2 * PHOTOS + duplicates
    assert duplicates <= in_flight  # only requests in flight at a kill are paid again
    assert summary["in_doubt"] == in_flight  # the whole manifest's, as `status` counts them
    billed_describes = Counter(e.request_hash for e in server.state.log if e.op == "v4-describe" and e.billed)
    assert sum(billed_describes.values()) - len(billed_describes) <= in_flight
