"""A manifest's plan fingerprint: has anything its jobs come from changed since the last plan?

The fingerprint hashes the manifest's text and the size and modification
time of every file its jobs are read from: prompts files, catalog CSVs,
each local source image (a glob's matches included, so a new file changes
it), and each mask and reference file. When it matches the fingerprint stored with a complete plan, `run`
skips validation and expansion: re-running a finished 100,000-job manifest
starts in about a second instead of re-planning every job. (Like make, it
trusts size and mtime: an edit that keeps both is not noticed; touch the file.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline import endpoints
from pipeline.job_inputs import merge_files, render, resolve, template_problem
from pipeline.manifest import LoadedManifest, StageSpec
from pipeline.sources import Reporter, is_url, iter_images


def _stat(path: Path | str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"


def _identity(location: str) -> str:
    return location if is_url(location) else _stat(location)


def _listed_files(spec: StageSpec, defaults: dict[str, object], loaded: LoadedManifest) -> list[str]:
    """The reference files of a job and of its stages (lists of paths or URLs), resolved."""
    found: list[str] = []
    files = merge_files(spec.op, defaults, spec.params)
    for role in endpoints.endpoint(spec.op).files:
        value = files.get(role.name)
        if role.many and isinstance(value, list):
            found.extend(resolve(item, loaded.base_dir) for item in value if isinstance(item, str))
    for child in spec.then or []:
        found.extend(_listed_files(child, defaults, loaded))
    return found


def plan_fingerprint(loaded: LoadedManifest) -> str:
    """The fingerprint of a manifest and of every file its jobs are read from."""
    digest = hashlib.sha256(loaded.sha256.encode())
    report = Reporter(loaded.file, loaded.line)
    defaults = loaded.manifest.defaults
    for index, spec in enumerate(loaded.manifest.jobs):
        if isinstance(spec.prompts, str):
            digest.update(_stat(loaded.base_dir / spec.prompts).encode())
        if isinstance(spec.images, dict) and isinstance(spec.images.get("csv"), str):
            digest.update(_stat(loaded.base_dir / spec.images["csv"]).encode())
        for location in _listed_files(spec, defaults, loaded):
            digest.update(_identity(location).encode() + b"\0")
        if spec.images is not None:
            ep = endpoints.endpoint(spec.op)
            files = merge_files(spec.op, defaults, spec.params)
            templates = [files[r] for r in ep.per_image_roles if isinstance(files.get(r), str)]
            for image in iter_images(
                spec.images,
                loaded.base_dir,
                ("jobs", index),
                report,
                check_files=False,
                companions=ep.per_image_roles,
            ):
                digest.update(_identity(image.location).encode())
                for _role, location, _column in image.companions:
                    digest.update(_identity(location).encode())
                for template in templates:
                    if not template_problem(template):
                        digest.update(_identity(resolve(render(template, image), loaded.base_dir)).encode())
                digest.update(b"\0")
    if report.problems:
        digest.update(b"problems")  # a broken source never matches a clean plan
    return digest.hexdigest()
