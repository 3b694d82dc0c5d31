"""Streamed expansion of a manifest into jobs (SPEC §4).

`expand` is a generator: prompts files and catalogs are read as streams and
each job is yielded as soon as it is known, so a manifest of a million jobs
never sits in memory. Each job's `rank` is its position within its `jobs:`
entry; claiming by rank interleaves the entries, so every op gets its turn.
A prompts file's row may set request fields of its own (`pipeline.prompts`):
they sit between the job's fields and its matrix combination.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import endpoints, structured
from pipeline.job_inputs import RESOLVER, input_counts, key_inputs, merge_files, own_request
from pipeline.jobs import PlannedJob
from pipeline.keys import child_key, job_key
from pipeline.manifest import LoadedManifest, StageSpec
from pipeline.pricing import PriceTable
from pipeline.prompts import Columns, iter_rows
from pipeline.ratios import normalise_ratios
from pipeline.sources import Reporter, SourceImage, iter_images


def merge_params(
    op: str,
    defaults: Mapping[str, Any],
    own: Mapping[str, Any],
    combo: Mapping[str, Any],
    objects: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Defaults the op takes, overlaid by the job's own fields, then by a matrix combination.

    The op's file roles (references, a mask) are not request fields: they
    become the job's inputs (`pipeline.job_inputs`). Ratios written `16:9`
    come out in the op's own spelling (`pipeline.ratios`). Structured fields
    (a JSON prompt) are resolved last (`pipeline.structured`): a
    ``"{json_prompt}"`` takes its object from ``objects`` (a parent's
    answer), then ``json_prompt_overrides`` patches it.
    """
    ep = endpoints.endpoint(op)
    merged = {k: v for k, v in defaults.items() if k in ep.fields}
    patches = structured.overrides_keys(ep)
    mine = own_request(op, own)
    merged.update({k: v for k, v in mine.items() if k not in patches})
    merged.update(combo)
    normalise_ratios(op, merged)
    return structured.resolve(ep, merged, {k: mine[k] for k in patches if k in mine}, objects)


def matrix_combos(matrix: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """The cartesian product of a matrix, as one dict per combination (one empty dict if none)."""
    if not matrix:
        return [{}]
    names = list(matrix)
    return [
        dict(zip(names, values, strict=True)) for values in itertools.product(*(matrix[n] for n in names))
    ]


def stage_ref(path: Sequence[int]) -> str:
    """``[2, 0]`` (jobs[2].then[0]) as ``"2.0"``."""
    return ".".join(str(p) for p in path)


def find_stage(jobs: Sequence[StageSpec], ref: str) -> StageSpec | None:
    """The job or stage spec a stage reference points at; None if the manifest no longer has it."""
    stages: Sequence[StageSpec] | None = jobs
    spec: StageSpec | None = None
    for i in (int(p) for p in ref.split(".")):
        if not stages or not 0 <= i < len(stages):
            return None
        spec = stages[i]
        stages = spec.then
    return spec


def chained_stage_refs(jobs: Sequence[StageSpec]) -> frozenset[str]:
    """The references of every `then:` stage of these jobs (``"2.0"``, ``"2.0.1"``), at any depth."""
    refs: set[str] = set()

    def walk(stages: Sequence[StageSpec], path: tuple[int, ...]) -> None:
        for i, spec in enumerate(stages):
            here = (*path, i)
            if len(here) > 1:
                refs.add(stage_ref(here))
            walk(spec.then or [], here)

    walk(jobs, ())
    return frozenset(refs)


def expand(loaded: LoadedManifest, report: Reporter | None = None) -> Iterator[PlannedJob]:
    """Every top-level job of a validated manifest, streamed."""
    manifest = loaded.manifest
    prices = PriceTable(manifest.prices)
    report = report or Reporter(loaded.file, loaded.line)
    for index, spec in enumerate(manifest.jobs):
        path = ("jobs", index)
        ep = endpoints.endpoint(spec.op)
        base = dict(spec.params)
        files = merge_files(spec.op, manifest.defaults, base)
        shared = RESOLVER.shared(ep, files, loaded.base_dir)
        combos = matrix_combos(spec.matrix)
        columns = Columns.for_job(spec)
        images: Iterator[SourceImage | None]
        if spec.images is not None:
            images = iter_images(
                spec.images,
                loaded.base_dir,
                path,
                report,
                check_files=False,
                companions=ep.per_image_roles,
            )
        else:
            images = iter([None])
        rank = 0
        for image in images:
            identity = None
            sha = None
            if image is not None:
                sha = None if image.is_url else RESOLVER.sha256(image.location)
                identity = image.location if image.is_url else f"sha256:{sha}"
            inputs = RESOLVER.inputs(ep, files, image, loaded.base_dir, shared)
            counts = input_counts(inputs)
            rows = iter_rows(spec.prompt, spec.prompts, loaded.base_dir, path, report, columns)
            for row in rows:
                own = {**base, **row.fields} if row.fields else base
                for combo in combos:
                    request = merge_params(spec.op, manifest.defaults, own, combo)
                    if row.prompt is not None:
                        request["prompt"] = row.prompt
                    model = ep.tier_of(request, counts)
                    count = ep.images(request)
                    cost = prices.job_cost(spec.op, model, count)
                    for replica in range(spec.repeat):
                        yield PlannedJob(
                            key=job_key(spec.op, request, identity, replica, key_inputs(inputs)),
                            op=spec.op,
                            request=request,
                            stage=str(index),
                            rank=rank,
                            replica=replica,
                            model=model,
                            num_images=count,
                            cost_usd=cost,
                            source=image.location if image else None,
                            source_sha256=sha,
                            source_id=row.row_id or (image.catalog_id if image else None),
                            inputs=inputs,
                        )
                        rank += 1


@dataclass(frozen=True)
class ParentResult:
    """One result of a finished job that feeds its `then:` stages."""

    index: int
    prompt: str | None = None
    description: str | None = None
    image_path: str | None = None
    image_sha256: str | None = None


def expand_children(
    parent: PlannedJob,
    parent_spec: StageSpec,
    results: Sequence[ParentResult],
    defaults: Mapping[str, Any],
    prices: PriceTable,
    base_dir: Path | str = ".",
) -> Iterator[PlannedJob]:
    """The jobs of a finished job's `then:` stages, one per result (and matrix/replica).

    A stage's reference lists (its own or from ``defaults``) are resolved
    against ``base_dir``, the manifest's folder. After an op whose answer is
    an object (a JSON prompt), ``{description}`` is its summary and a stage
    field written ``"{json_prompt}"`` is the object (`pipeline.structured`).
    """
    parent_ep = endpoints.endpoint(parent.op)
    for stage_index, stage in enumerate(parent_spec.then or []):
        ref = f"{parent.stage}.{stage_index}"
        ep = endpoints.endpoint(stage.op)
        files = merge_files(stage.op, defaults, stage.params)
        inputs = RESOLVER.inputs(ep, files, None, base_dir)
        counts = input_counts(inputs)
        rank = 0
        for result in results:
            description, objects = structured.answer_of(parent_ep, result.description or "")
            values = {
                "description": description,
                "prompt": result.prompt or parent.prompt or "",
                "id": parent.source_id or "",
            }
            source, sha = parent.source, parent.source_sha256
            if result.image_path is not None:
                source, sha = result.image_path, result.image_sha256
            for combo in matrix_combos(stage.matrix):
                request = merge_params(stage.op, defaults, stage.params, combo, objects)
                if stage.prompt is not None:
                    request["prompt"] = stage.prompt.format(**values)
                model = ep.tier_of(request, counts)
                count = ep.images(request)
                for replica in range(stage.repeat):
                    yield PlannedJob(
                        key=child_key(
                            parent.key, ref, result.index, stage.op, request, replica, key_inputs(inputs)
                        ),
                        op=stage.op,
                        request=request,
                        stage=ref,
                        rank=parent.rank,
                        replica=replica,
                        model=model,
                        num_images=count,
                        cost_usd=prices.job_cost(stage.op, model, count),
                        source=source if ep.image else None,
                        source_sha256=sha if ep.image else None,
                        source_id=parent.source_id,
                        parent_key=parent.key,
                        inputs=inputs,
                    )
                    rank += 1
