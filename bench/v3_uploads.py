"""Peak RSS of `ideobatch run` uploading 200 v3-edit calls of ~16 MB each, 8 in flight.

    python bench/v3_uploads.py [--jobs 200] [--concurrency 8] [--latency-ms 200]

Each job sends an 8 MB source, its mask and two 4 MB style references (a set
of 8 MB): about 16 MB a call, 128 MB in flight at concurrency 8 if the files
were read whole. The runner streams local files from disk as each request is
written (`pipeline.uploads`), so its peak RSS must stay under 250 MB.

The files are generated in a temporary folder: small PNGs padded to size with
zero bytes after their end (the API, and the fake server, read a file's type
and size from its header; the padding is what makes the upload heavy). The
fake server runs in its own process; the runner's peak RSS is read from the
kernel once it has exited (``RUSAGE_CHILDREN``, before the server is reaped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import spawn, start_server

MB = 1024 * 1024
SOURCE_BYTES = 8 * MB
REFERENCE_BYTES = 4 * MB
RSS_LIMIT_MB = 250
#: distinct sources (the jobs take them in turn, each with its own prompt)
SOURCES = 50


def padded_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int], total: int) -> None:
    """A PNG of ``size`` pixels whose file is ``total`` bytes (zero bytes after its end)."""
    Image.new("RGB", size, colour).save(path)
    with path.open("ab") as handle:
        handle.truncate(total)


def write_inputs(folder: Path, jobs: int, concurrency: int, url: str, scale: float) -> Path:
    """Sources, masks, references, prompts and the manifest (``scale``: of the files' sizes)."""
    (folder / "src").mkdir()
    (folder / "masks").mkdir()
    for i in range(SOURCES):
        padded_png(folder / "src" / f"s{i:03d}.png", (512, 512), (i, 80, 160), int(SOURCE_BYTES * scale))
        Image.new("L", (512, 512), 0).save(folder / "masks" / f"s{i:03d}.png")
    for name in ("r1", "r2"):
        padded_png(folder / f"{name}.png", (64, 64), (200, 90, 10), int(REFERENCE_BYTES * scale))
    per_source = max(1, jobs // SOURCES)
    (folder / "prompts.txt").write_text("".join(f"a new door, variant {i}\n" for i in range(per_source)))
    manifest = folder / "edits.yaml"
    manifest.write_text(
        f"version: 1\nname: bench-v3-uploads\nprovider:\n  kind: crazyrouter\n  base_url: {url}\n"
        f"limits:\n  concurrency: {concurrency}\n"
        "jobs:\n  - op: v3-edit\n    prompts: prompts.txt\n    images: src/*.png\n"
        "    mask: masks/{stem}.png\n    rendering_speed: TURBO\n"
        "    style_reference_images: [r1.png, r2.png]\n"
    )
    return manifest


async def bench(jobs: int, concurrency: int, latency_ms: float, scale: float = 1.0) -> dict[str, float]:
    server, url = await start_server(latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            manifest = write_inputs(folder, jobs, concurrency, url, scale)
            started = time.perf_counter()
            run = await spawn(
                "run", str(manifest), "--ledger", f"sqlite:///{folder}/ledger.db", "--quiet", "--json"
            )
            out, err = await run.communicate()
            took = time.perf_counter() - started
            # the run is the only child reaped so far: this is its peak RSS
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            if run.returncode != 0:
                raise RuntimeError(f"run failed ({run.returncode}): {err.decode()[-2000:]}")
            summary = json.loads(out)
    finally:
        server.terminate()
        await server.wait()
    done = summary["jobs"]["succeeded"]
    uploaded = done * (SOURCE_BYTES + 2 * REFERENCE_BYTES) * scale / MB
    return {"jobs": done, "seconds": took, "uploaded_mb": uploaded, "peak_rss_mb": peak_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="file sizes times this (0.01: the runner's RSS without big uploads)",
    )
    args = parser.parse_args()
    result = asyncio.run(bench(args.jobs, args.concurrency, args.latency_ms, args.scale))
    print(
        f"{result['jobs']:.0f} v3-edit jobs, {result['uploaded_mb']:.0f} MB uploaded in "
        f"{result['seconds']:.1f} s at concurrency {args.concurrency}: "
        f"runner peak RSS {result['peak_rss_mb']:.0f} MB (limit {RSS_LIMIT_MB} MB)"
    )
    return 0 if result["peak_rss_mb"] < RSS_LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
