"""Rebuild ``ledger.db``: this manifest run to the end by ideobatch 0.1.0 (commit 12ea405).

The fixture proves that a release never changes the key of a job planned by
an earlier one (`tests/integration/test_legacy_ledger.py`). It must be made
with the OLD code, not this checkout's:

    git worktree add /tmp/old-release 12ea405
    cd /tmp/old-release && python3 -m venv .venv && .venv/bin/pip install -e .
    cd -  # back to this folder
    /tmp/old-release/.venv/bin/python make.py

The URL sources point at a fake server on the fixed port 18765, started here;
a re-run that has nothing to do never fetches them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from PIL import Image

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.running import RunOptions, run_manifest

HERE = Path(__file__).resolve().parent
KEY = "legacy-fixture-key-0123456789"


def sources() -> None:
    (HERE / "src").mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(HERE / "src" / "red.png")
    Image.new("RGB", (48, 64), (30, 30, 200)).save(HERE / "src" / "blue.jpg", quality=90)


async def main() -> None:
    sources()
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
        (HERE / name).unlink(missing_ok=True)
    os.environ["CRAZYROUTER_API_KEY"] = KEY
    async with FakeServer(FaultConfig(api_key=KEY, seed=1), port=18765) as server:
        code, summary = await run_manifest(
            RunOptions(
                manifest=str(HERE / "legacy.yaml"),
                ledger_url=f"sqlite:///{HERE / 'ledger.db'}",
                out_dir=str(HERE / "out"),
                quiet=True,
                base_url=server.url,
            )
        )
    shutil.rmtree(HERE / "out", ignore_errors=True)
    print(code, summary["jobs"], summary["spend_usd"])


if __name__ == "__main__":
    asyncio.run(main())
