"""The script a user would otherwise write: asyncio, aiohttp and a semaphore — no ledger, no retry.

    python bench/naive_baseline.py --url http://127.0.0.1:8765 --jobs 2000 --concurrency 20

It sends the same requests as `ideobatch run` (proxy dialect, one image each),
downloads every image and writes it to a file, and prints jobs per second.
`bench/run_all.py` measures it side by side with the runner.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


async def naive_run(url: str, key: str, jobs: int, concurrency: int, out_dir: Path) -> float:
    """Run ``jobs`` generate calls with at most ``concurrency`` in flight; returns the seconds taken."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    out_dir.mkdir(parents=True, exist_ok=True)

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        body = {"image_request": {"prompt": f"naive baseline {index}", "model": "V_2_TURBO"}}
        async with gate, session.post(f"{url}/ideogram/generate", json=body, headers=headers) as response:
            response.raise_for_status()
            result = await response.json()
        for n, image in enumerate(result["data"]):
            async with session.get(image["url"]) as response:
                data = await response.read()
            (out_dir / f"{index}-{n}-{hashlib.sha256(data).hexdigest()[:12]}.png").write_bytes(data)

    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session, i) for i in range(jobs)))
        return time.perf_counter() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=os.environ.get("CRAZYROUTER_API_KEY", "fake-key"))
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = await naive_run(args.url, args.key, args.jobs, args.concurrency, Path(tmp))
    print(f"naive: {args.jobs} jobs in {seconds:.2f}s = {args.jobs / seconds:.1f} jobs/s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
