"""A manifest's plan fingerprint: has anything its jobs come from changed since the last plan?

The fingerprint hashes the manifest's text and the size and modification
time of every file its jobs are read from: prompts files, catalog CSVs, and
each local source image (a glob's matches included, so a new file changes
it). When it matches the fingerprint stored with a complete plan, `run`
skips validation and expansion: re-running a finished 100,000-job manifest
starts in about a second instead of re-planning every job. (Like make, it
trusts size and mtime: an edit that keeps both is not noticed; touch the file.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.manifest import LoadedManifest
from pipeline.sources import Reporter, iter_images


def _stat(path: Path | str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"


def plan_fingerprint(loaded: LoadedManifest) -> str:
    """The fingerprint of a manifest and of every file its jobs are read from."""
    digest = hashlib.sha256(loaded.sha256.encode())
    report = Reporter(loaded.file, loaded.line)
    for index, spec in enumerate(loaded.manifest.jobs):
        if isinstance(spec.prompts, str):
            digest.update(_stat(loaded.base_dir / spec.prompts).encode())
        if isinstance(spec.images, dict) and isinstance(spec.images.get("csv"), str):
            digest.update(_stat(loaded.base_dir / spec.images["csv"]).encode())
        if spec.images is not None:
            for image in iter_images(
                spec.images, loaded.base_dir, ("jobs", index), report, check_files=False
            ):
                digest.update((image.location if image.is_url else _stat(image.location)).encode())
                digest.update(b"\0")
    if report.problems:
        digest.update(b"problems")  # a broken source never matches a clean plan
    return digest.hexdigest()
