"""Deep validation of a structurally valid manifest (SPEC §4).

Checks every request against the provider's schema (each matrix combination,
with defaults merged), every prompts file and catalog row, every local source
image (exists, at most 10 MB, JPEG/PNG/WebP), the output template, chained
stages and their templates, and that each entry expands to at least one job.
Returns every problem found; a manifest with problems sends and records nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import endpoints
from pipeline.errors import ManifestError, Problem
from pipeline.expand import matrix_combos, merge_params
from pipeline.input_validation import check_default_file, check_image_files, check_stage_files
from pipeline.job_inputs import merge_files
from pipeline.manifest import LoadedManifest, StageSpec, load_manifest
from pipeline.naming import template_problem
from pipeline.pricing import valid_override_key
from pipeline.prompt_checks import check_overrides, check_prompt_choice, check_prompt_template, stage_objects
from pipeline.ratios import normalised_copy
from pipeline.row_checks import count_checked_rows
from pipeline.sources import Reporter, iter_images
from pipeline.structured import overrides_key
from pipeline.suggestions import did_you_mean
from pipeline.yaml_loader import Path as DataPath

#: a matrix larger than this is almost certainly a mistake
MAX_MATRIX_COMBOS = 100_000


@dataclass
class Counts:
    """How many jobs each `jobs:` entry expands to (top level only)."""

    per_entry: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        """All top-level jobs."""
        return sum(self.per_entry)


def validate(loaded: LoadedManifest) -> tuple[list[Problem], Counts]:
    """Every problem of a manifest, and the job counts it expands to."""
    manifest = loaded.manifest
    report = Reporter(loaded.file, loaded.line)
    if problem := template_problem(manifest.output.name):
        report.at(("output", "name"), problem)
    if not manifest.output.dir.strip():
        report.at(("output", "dir"), "the output folder is empty")
    for key in manifest.prices:
        if not valid_override_key(key):
            report.at(
                ("prices", key),
                "a price key is an op (`upscale`) or op.tier (`generate.V_2`, `v3-generate.QUALITY`)",
            )
    if manifest.retry.max < manifest.retry.initial:
        report.at(("retry", "max"), "must be at least `initial`")
    _check_defaults(manifest.defaults, report)
    counts = Counts()
    for index, spec in enumerate(manifest.jobs):
        path: DataPath = ("jobs", index)
        _check_stage(loaded, spec, path, report, parent_op=None)
        counts.per_entry.append(_count_entry(loaded, spec, path, report))
    report.problems.sort(key=lambda p: (p.file != loaded.file, p.file, p.line or 0))
    return _dedupe(report.problems), counts


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[str] = set()
    out = []
    for problem in problems:
        if str(problem) not in seen:
            seen.add(str(problem))
            out.append(problem)
    return out


def _check_defaults(defaults: Mapping[str, Any], report: Reporter) -> None:
    for name, value in defaults.items():
        if name == "prompt":
            report.at(("defaults", name), "a prompt belongs to a job, not to defaults")
            continue
        roles = [role for e in endpoints.CATALOG.values() for role in e.files if role.name == name]
        if roles:
            check_default_file(name, value, report, many=roles[0].many)
            continue
        takers = [e for e in endpoints.CATALOG.values() if name in e.fields]
        if not takers:
            hint = did_you_mean(name, endpoints.all_fields())
            report.at(("defaults", name), "not a request field of any op" + hint)
            continue
        # a default serves every op that takes it: it is wrong only if none of them takes its value
        found = [e.check(normalised_copy(e.op, {name: value}), need_required=False) for e in takers]
        if all(found):
            for field_name, message in found[0]:
                report.at(_origin(field_name or name, (), {}, {}, defaults), message)


def _origin(
    field_name: str,
    path: DataPath,
    own: Mapping[str, Any],
    combo: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> DataPath:
    """Where the value a problem is about was written, as deep into it as the data goes.

    A problem inside a structured field (``json_prompt.style_description``)
    that its ``json_prompt_overrides`` wrote is shown there.
    """
    parts = tuple(int(p) if p.isdigit() else p for p in field_name.split(".")) if field_name else ()
    if not parts:
        return path
    top = str(parts[0])
    if top in combo:
        return (*path, "matrix", top)
    if top in own:
        patch_key = overrides_key(top)
        if patch_key in own and _reaches(own[patch_key], parts[1:]):
            return (*path, patch_key, *parts[1:])
        return (*path, top, *_within(own[top], parts[1:]))
    return ("defaults", top, *_within(defaults.get(top), parts[1:]))


def _reaches(data: Any, parts: tuple[str | int, ...]) -> bool:
    """Whether every part of ``parts`` is a key (or index) of ``data``, in turn."""
    return len(_within(data, parts)) == len(parts)


def _within(data: Any, parts: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The leading ``parts`` that exist in ``data`` (a pydantic union tag such as `int` does not)."""
    found: list[str | int] = []
    for part in parts:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_list or (isinstance(data, Mapping) and part in data)):
            break
        data = data[part]
        found.append(part)
    return tuple(found)


def _check_stage(
    loaded: LoadedManifest,
    spec: StageSpec,
    path: DataPath,
    report: Reporter,
    parent_op: str | None,
) -> None:
    defaults = loaded.manifest.defaults
    own = spec.params
    ep = endpoints.endpoint(spec.op)
    takes_prompt = "prompt" in ep.fields
    needs_prompt = "prompt" in ep.required
    if not takes_prompt and spec.prompt is not None:
        report.at((*path, "prompt"), f"{spec.op} takes no prompt")
    if parent_op is None and ep.image is not None and getattr(spec, "images", None) is None:
        report.at(path, f"{spec.op} needs `images`")
    if parent_op is None and ep.image is None and getattr(spec, "images", None) is not None:
        report.at((*path, "images"), f"{spec.op} takes no source image")
    if parent_op is None and needs_prompt and spec.prompt is None and getattr(spec, "prompts", None) is None:
        report.at(path, f"{spec.op} needs `prompt` or `prompts`")
    if parent_op is not None:
        if needs_prompt and spec.prompt is None:
            report.at(path, f"{spec.op} needs a `prompt` template")
        if spec.prompt is not None:
            check_prompt_template(spec.prompt, parent_op, (*path, "prompt"), report)
    written = merge_params(spec.op, defaults, own, {})
    check_prompt_choice(ep, spec, written, path, report)
    check_overrides(ep, spec, written, path, report)
    objects = stage_objects(ep, spec, written, parent_op, path, report)
    files = merge_files(spec.op, defaults, own)
    counts = check_stage_files(
        loaded,
        ep,
        files,
        own,
        path,
        report,
        top_level=parent_op is None,
        images_spec=getattr(spec, "images", None),
    )
    combos = _checked_combos(spec, path, report)
    for combo in combos:
        params = merge_params(spec.op, defaults, own, combo, objects)
        if "prompt" in combo:
            report.at((*path, "matrix", "prompt"), "use `prompts` for several prompts")
        for field_name, message in ep.check(params, need_required=False, files=counts):
            if field_name == "prompt":
                continue
            where = _origin(field_name, path, own, combo, defaults)
            report.at(where, message + _unknown_field_hint(field_name, spec))
    for i, child in enumerate(spec.then or []):
        _check_stage(loaded, child, (*path, "then", i), report, parent_op=spec.op)


def _unknown_field_hint(field_name: str, spec: StageSpec) -> str:
    """ "; did you mean ...?" when a job names a field its op does not have (`promt`, `thne`)."""
    top = field_name.split(".", 1)[0]
    ep = endpoints.endpoint(spec.op)
    if not top or top in ep.fields:
        return ""
    return did_you_mean(top, ep.fields | ep.file_names | set(type(spec).model_fields))


def _checked_combos(spec: StageSpec, path: DataPath, report: Reporter) -> list[dict[str, Any]]:
    if not spec.matrix:
        return [{}]
    size = 1
    for name, values in spec.matrix.items():
        if not values:
            report.at((*path, "matrix", name), "an empty list expands to zero jobs")
            return []
        size *= len(values)
    if size > MAX_MATRIX_COMBOS:
        report.at((*path, "matrix"), f"{size} combinations; at most {MAX_MATRIX_COMBOS}")
        return []
    return matrix_combos(spec.matrix)


def _count_entry(loaded: LoadedManifest, spec: Any, path: DataPath, report: Reporter) -> int:
    """Stream the entry's sources once, checking each item, and count its jobs."""
    before = len(report.problems)
    prompts = count_checked_rows(loaded, spec, path, report)
    images = 1
    if spec.images is not None:
        encoding = loaded.manifest.provider.image_encoding
        ep = endpoints.endpoint(spec.op)
        files = merge_files(spec.op, loaded.manifest.defaults, spec.params)
        column = spec.images.get("column", "url") if isinstance(spec.images, dict) else "images"
        images = 0
        for image in iter_images(spec.images, loaded.base_dir, path, report, companions=ep.per_image_roles):
            images += 1
            if encoding == "url" and not image.is_url:
                report.at(
                    (*path, "images"),
                    f"{image.location}: image_encoding `url` needs URL sources, not local files",
                )
                break
            check_image_files(loaded, ep, files, image, path, report, image_column=str(column))
    combos = 1
    if spec.matrix:
        combos = len(matrix_combos(spec.matrix)) if all(spec.matrix.values()) else 0
    total = int(prompts * images * combos * spec.repeat)
    if total == 0 and len(report.problems) == before:
        report.at(path, "expands to zero jobs (no prompts or no images)")
    return total


def load_valid(path: str) -> tuple[LoadedManifest, Counts]:
    """Load and fully validate a manifest; raise `ManifestError` with every problem."""
    try:
        loaded = load_manifest(path)
    except ManifestError as exc:
        if exc.partial is None:
            raise
        # report the other sections' problems too, all in one go
        more, _counts = validate(exc.partial)
        placeholders = tuple(f"jobs[{i}]" for i in exc.placeholder_jobs)
        more = [p for p in more if not (placeholders and p.field.startswith(placeholders))]
        raise ManifestError(sorted(exc.problems + more, key=lambda p: (p.file, p.line or 0))) from None
    problems, counts = validate(loaded)
    if problems:
        raise ManifestError(problems)
    return loaded, counts
