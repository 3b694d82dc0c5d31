"""Chaos trials for docs/reliability.md: every fault at once plus SIGKILLs, several seeds.

    python bench/reliability.py [--rounds 5] [--jobs 150] [--kills 3]

Each round starts a fake server with every fault on, runs `ideobatch run` as a
subprocess, SIGKILLs it at seeded random moments, expires the URLs it was
handed while it is down, then lets it finish (retrying expired jobs). It
prints, per round and in total, how many times each fault fired and whether
what must hold held: every job done, every image on disk with its sha256, no
temporary file left, double billing within the in-doubt count.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import signal
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import KEY, spawn

from pipeline.fake_server import FakeServer, FaultConfig

FAULTS = {
    "latency_ms": 40,
    "latency_jitter_ms": 30,
    "rate_429": 0.15,
    "retry_after": "mixed",
    "inflight_limit": 6,
    "rate_5xx": 0.1,
    "rate_reset": 0.05,
    "rate_truncate": 0.05,
    "download_latency_ms": 30,
    "rate_download_truncate": 0.05,
    "rate_download_reset": 0.05,
    # every response in pieces at random byte boundaries, headers included; bodies at 64 KB/s
    "split_writes": 1.0,
    "trickle_bps": 65536,
}


async def cli(*args: str, cwd: Path, wait: bool = True) -> tuple[int, str, asyncio.subprocess.Process]:
    process = await spawn(*args, cwd=cwd, stderr=asyncio.subprocess.DEVNULL)
    if not wait:
        return 0, "", process
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(), process


def count(folder: Path, sql: str) -> int:
    if not (folder / "ledger.db").exists():
        return 0
    with sqlite3.connect(folder / "ledger.db", timeout=10) as conn:
        try:
            return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:
            return 0


async def one_round(seed: int, jobs: int, kills: int) -> dict[str, object]:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with FakeServer(FaultConfig(api_key=KEY, seed=seed, **FAULTS)) as server:
            (folder / "p.txt").write_text("".join(f"chaos {seed} prompt {i}\n" for i in range(jobs)))
            (folder / "m.yaml").write_text(
                f"version: 1\nname: chaos\nprovider: {{kind: crazyrouter, base_url: '{server.url}'}}\n"
                "limits: {concurrency: 8}\nretry: {attempts: 30}\njobs:\n  - {op: generate, prompts: p.txt}\n"
            )
            ledger = f"sqlite:///{folder}/ledger.db"
            args = ("run", "m.yaml", "--ledger", ledger, "--out", str(folder / "out"), "--quiet")
            for kill in range(kills):
                _c, _o, process = await cli(*args, cwd=folder, wait=False)
                target = count(folder, "SELECT count(*) FROM jobs WHERE state='succeeded'") + rnd.randint(
                    5, 25
                )
                while count(folder, "SELECT count(*) FROM jobs WHERE state='succeeded'") < target:
                    if process.returncode is not None:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rnd.uniform(0, 0.05))
                process.send_signal(signal.SIGKILL)
                await process.wait()
                if kill == kills // 2:
                    server.set_faults(clock_offset_s=server.state.config.clock_offset_s + 2 * 86_400)
            code, out, _ = await cli(*args, "--json", cwd=folder)
            regenerated = 0
            if code == 1:
                _c, said, _ = await cli(
                    "retry", "chaos", "--reason", "url_expired", "--ledger", ledger, cwd=folder
                )
                regenerated = int(said.split()[0])
                code, out, _ = await cli(*args, "--json", cwd=folder)
            summary = json.loads(out)
            stats = server.state.stats()
        with sqlite3.connect(folder / "ledger.db") as conn:
            images = conn.execute("SELECT local_path, sha256 FROM images WHERE state='downloaded'").fetchall()
        on_disk = all(hashlib.sha256(Path(p).read_bytes()).hexdigest() == s for p, s in images)
        leftovers = list((folder / "out").rglob(".ideobatch-*"))
    held = {
        "all jobs succeeded": code == 0 and summary["jobs"]["succeeded"] == jobs,
        "every image on disk with its sha256": on_disk and len(images) == jobs,
        "no temporary file left": not leftovers,
        "double billing <= in doubt (+ regenerated)": stats["duplicate_billed"]
        <= summary["in_doubt"] + regenerated,
    }
    return {
        "faults": Counter(stats["faults"]),
        "kills": kills,
        "duplicates": stats["duplicate_billed"],
        "in_doubt": summary["in_doubt"],
        "regenerated": regenerated,
        "held": held,
    }


async def main() -> int:
    # the fake server logs each write to a connection the killed runner left; that is expected here
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    failures = 0
    for seed in range(1, args.rounds + 1):
        result = await one_round(seed, args.jobs, args.kills)
        faults: Counter[str] = result["faults"]  # type: ignore[assignment]
        totals.update(faults)
        totals["sigkill"] += args.kills
        held: dict[str, bool] = result["held"]  # type: ignore[assignment]
        failures += sum(not ok for ok in held.values())
        print(
            f"round {seed}: {dict(faults)} kills={args.kills} duplicates={result['duplicates']} "
            f"in_doubt={result['in_doubt']} regenerated={result['regenerated']} "
            + ("HELD" if all(held.values()) else f"BROKE {[k for k, ok in held.items() if not ok]}")
        )
    print("\n| fault | trials |\n|---|---|")
    for name, n in sorted(totals.items()):
        print(f"| {name} | {n} |")
    verdict = "everything held" if not failures else f"{failures} breaks"
    print(f"\n{args.rounds} rounds x {args.jobs} jobs: {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
