"""Validation of a job's files besides its main image: references and masks (SPEC §10 Files).

Run by `pipeline.validation` before anything is sent. Every local file is
sniffed (JPEG, PNG or WebP by its bytes), size-capped and decoded far enough
to know its size; a reference set stays under its cap; a mask has its image's
width and height; an op that takes square images gets them
(`pipeline.file_checks`). URLs are checked when they are downloaded (the job
then fails ``bad_source``), or by the server that fetches them. With
``image_encoding: url`` every file must be a URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.endpoints import Endpoint
from pipeline.file_checks import FileFacts, FileProblem, file_problems, local_facts
from pipeline.job_inputs import render, resolve, template_problem
from pipeline.manifest import LoadedManifest
from pipeline.sources import Reporter, SourceImage, is_url
from pipeline.yaml_loader import Path as DataPath

URL_ONLY = "image_encoding `url` sends every file as a URL: give URLs, not local files"


def check_default_file(name: str, value: Any, report: Reporter, *, many: bool) -> None:
    """The shape of a file role written in `defaults` (its files are checked with each job)."""
    _shape_problem(value, ("defaults", name), report, many=many)


def _shape_problem(value: Any, where: DataPath, report: Reporter, *, many: bool) -> bool:
    """Report a value that is not a list of paths/URLs (or, per image, a template); True if so."""
    if many:
        if not isinstance(value, list) or not value:
            report.at(where, "a list of paths or http(s) URLs")
            return True
        bad = [i for i, item in enumerate(value) if not isinstance(item, str) or not item.strip()]
        for i in bad:
            report.at((*where, i), "each file is a path or an http(s) URL")
        return bool(bad)
    if not isinstance(value, str) or not value.strip():
        report.at(where, "a path template such as masks/{stem}.png (or a column of the catalog CSV)")
        return True
    if why := template_problem(value):
        report.at(where, why)
        return True
    return False


def check_stage_files(
    loaded: LoadedManifest,
    ep: Endpoint,
    files: Mapping[str, Any],
    own: Mapping[str, Any],
    path: DataPath,
    report: Reporter,
    *,
    top_level: bool,
    images_spec: Any,
) -> dict[str, int]:
    """Check a job's (or stage's) file roles; return how many files of each role it sends."""
    counts: dict[str, int] = {}
    listed: dict[str, list[FileFacts | None]] = {}
    url_only = loaded.manifest.provider.image_encoding == "url"
    for role in ep.files:
        where: DataPath = (*path, role.name) if role.name in own else ("defaults", role.name)
        from_catalog = isinstance(images_spec, dict) and role.name in images_spec
        if role.name not in files:
            if role.required and role.per_image and not top_level:
                report.at(path, f"{ep.op} needs a `{role.name}` per image: it cannot be a `then:` stage")
            elif role.required and not from_catalog and top_level:
                hint = "a path template such as masks/{stem}.png" if role.per_image else "a list of files"
                report.at(path, f"{ep.op} needs `{role.name}`: {hint}")
            if from_catalog:
                counts[role.name] = 1
            continue
        value = files[role.name]
        if _shape_problem(value, where, report, many=role.many):
            continue
        if role.per_image:
            if not top_level:
                message = f"a `then:` stage's images come from its parent: give `{role.name}` on a job"
                report.at(where, message)
            elif from_catalog:
                report.at(where, "given both here and as a column of the catalog: keep one")
            counts[role.name] = 1
            continue
        facts: list[FileFacts | None] = []
        for index, item in enumerate(value):
            location = resolve(item.strip(), loaded.base_dir)
            if is_url(location):
                facts.append(None)
                continue
            if url_only:
                report.at((*where, index), f"{item}: {URL_ONLY}")
            facts.append(local_facts(Path(location), item))
        counts[role.name] = len(value)
        listed[role.name] = facts
    for problem in file_problems(ep, None, listed):
        where = (*path, problem.role) if problem.role in own else ("defaults", problem.role)
        report.at(where if problem.index is None else (*where, problem.index), _named(problem, listed))
    return counts


def _named(problem: FileProblem, listed: Mapping[str, list[FileFacts | None]]) -> str:
    """A problem's message, led by the file it is about."""
    if problem.index is None:
        return problem.message
    facts = listed.get(problem.role, [])
    item = facts[problem.index] if problem.index < len(facts) else None
    return f"{item.name}: {problem.message}" if item is not None else problem.message


def check_image_files(
    loaded: LoadedManifest,
    ep: Endpoint,
    files: Mapping[str, Any],
    image: SourceImage,
    path: DataPath,
    report: Reporter,
    *,
    image_column: str = "images",
) -> None:
    """Check one main image's own files (its mask) and what the op asks of it (square).

    ``image_column`` names the catalog column of the image, for problems
    located in the catalog CSV.
    """
    if not (ep.per_image_roles or ep.square_image):
        return
    per_image: dict[str, list[FileFacts | None]] = {}
    where_of: dict[str, tuple[DataPath, str | None]] = {}
    companions = {role: (location, column) for role, location, column in image.companions}
    url_only = loaded.manifest.provider.image_encoding == "url"
    for role in ep.per_image_roles:
        if role in companions:
            location, column = companions[role]
            shown = _relative(location, Path(image.catalog).parent if image.catalog else loaded.base_dir)
            where_of[role] = ((*path, "images", role), column)
        elif isinstance(files.get(role), str) and not template_problem(files[role]):
            shown = render(files[role], image)
            location = resolve(shown, loaded.base_dir)
            where_of[role] = ((*path, role), None)
        else:
            continue
        if is_url(location):
            per_image[role] = [None]
            continue
        if url_only:
            _report(report, image, where_of[role], f"{shown}: {URL_ONLY}")
            per_image[role] = [None]
            continue
        facts = local_facts(Path(location), shown)
        per_image[role] = [facts]
    main = None if image.is_url else local_facts(Path(image.location), _shown(image, loaded))
    for problem in file_problems(ep, main, per_image):
        if problem.role in where_of:
            facts_of = per_image.get(problem.role, [None])[0]
            name = facts_of.name if facts_of is not None else problem.role
            _report(report, image, where_of[problem.role], f"{name}: {problem.message}")
        elif problem.role == ep.image and main is not None:
            _report(report, image, ((*path, "images"), image_column), f"{main.name}: {problem.message}")


def _shown(image: SourceImage, loaded: LoadedManifest) -> str:
    """A local image's path as a user reads it: relative to the manifest's folder when inside it."""
    return _relative(image.location, loaded.base_dir)


def _relative(location: str, folder: Path) -> str:
    if is_url(location):
        return location
    try:
        return str(Path(location).relative_to(folder.resolve()))
    except ValueError:
        return location


def _report(report: Reporter, image: SourceImage, where: tuple[DataPath, str | None], message: str) -> None:
    """A problem of one image's files: at its catalog row when it has one, else in the manifest."""
    path, column = where
    if image.catalog is not None and image.line is not None and column is not None:
        report.in_file(image.catalog, image.line, column, message)
    else:
        report.at(path, message)
