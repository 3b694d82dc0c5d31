"""Expand a generated 1,000,000-job manifest and compute every key: jobs/s and peak RSS.

    python bench/expand.py [--jobs 1000000] [--csv]

The manifest is 10,000 prompts (a .txt file) x a 5 x 4 matrix x repeat; the
whole expansion streams, so peak RSS must stay under 150 MB. With ``--csv``
the jobs come from a prompts CSV of that many rows, each carrying its own
settings (aspect_ratio as ``16:9``, style_type, seed, num_images, the columns
of Ideogram's batch template), and the figure covers what ``plan`` does with
it: validation of every row, then expansion.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipeline.expand import expand
from pipeline.manifest import load_manifest
from pipeline.validation import load_valid

RSS_LIMIT_MB = 150


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_manifest(folder: Path, jobs: int) -> Path:
    prompts = 10_000
    combos = 20
    repeat = max(1, jobs // (prompts * combos))
    with (folder / "prompts.txt").open("w") as handle:
        for i in range(prompts):
            handle.write(f"product photo {i} of a ceramic mug on a wooden table, soft window light\n")
    manifest = folder / "big.yaml"
    manifest.write_text(
        "version: 1\nname: bench-expand\ndefaults: {model: V_2_TURBO, magic_prompt_option: OFF}\n"
        "jobs:\n  - op: generate\n    prompts: prompts.txt\n"
        f"    repeat: {repeat}\n"
        "    matrix:\n      style_type: [REALISTIC, ANIME, DESIGN, RENDER_3D, GENERAL]\n"
        "      aspect_ratio: [ASPECT_1_1, ASPECT_16_9, ASPECT_9_16, ASPECT_4_3]\n"
    )
    return manifest


RATIOS = ("16:9", "1:1", "9:16", "4:3")
STYLES = ("REALISTIC", "ANIME", "DESIGN", "RENDER_3D", "GENERAL")


def write_csv_manifest(folder: Path, rows: int) -> Path:
    """A manifest whose jobs are the rows of a prompts CSV with per-row settings."""
    with (folder / "prompts.csv").open("w") as handle:
        handle.write("prompt,aspect_ratio,style_type,seed,num_images\n")
        for i in range(rows):
            handle.write(
                f"product photo {i} of a ceramic mug on a wooden table,"
                f"{RATIOS[i % 4]},{STYLES[i % 5]},{i},{1 + i % 2}\n"
            )
    manifest = folder / "big.yaml"
    manifest.write_text(
        "version: 1\nname: bench-expand\ndefaults: {model: V_2_TURBO, magic_prompt_option: OFF}\n"
        "jobs:\n  - op: generate\n    prompts: prompts.csv\n"
    )
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--csv", action="store_true", help="jobs from a prompts CSV with per-row settings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.csv:
            manifest = write_csv_manifest(Path(tmp), args.jobs)
        else:
            manifest = write_manifest(Path(tmp), args.jobs)
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        if args.csv:
            loaded, _counts = load_valid(str(manifest))
            validated = time.perf_counter()
            print(f"validated {args.jobs:,} rows in {validated - started:.1f}s")
        else:
            loaded = load_manifest(manifest)
        count = 0
        keys_xor = 0
        for job in expand(loaded):
            count += 1
            keys_xor ^= int(job.key[:8], 16)
        elapsed = time.perf_counter() - started
    rss = peak_rss_mb()
    ok = rss < RSS_LIMIT_MB
    print(f"expanded {count:,} jobs (keys computed, xor {keys_xor:08x}) in {elapsed:.1f}s")
    print(f"jobs/s: {count / elapsed:,.0f}")
    print(
        f"peak RSS: {rss:.0f} MB (before expansion {rss_before:.0f} MB; limit {RSS_LIMIT_MB} MB) "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
