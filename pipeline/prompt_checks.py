"""Validation of how a job or stage gives its prompt: text, a JSON prompt, a parent's answer.

Run by `pipeline.validation` for each job and `then:` stage. An op that takes
``prompt`` or ``json_prompt`` (`Endpoint.one_of`) gets exactly one of them
(``prompts`` counts as ``prompt``); a stage field written
``"{json_prompt}"`` is only allowed after an op whose answer is a JSON prompt,
and is checked as a valid example of one; ``json_prompt_overrides`` is a
mapping and has a ``json_prompt`` to change (`pipeline.structured`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from pipeline import endpoints
from pipeline.endpoints import Endpoint
from pipeline.sources import Reporter
from pipeline.structured import overrides_key, placeholder
from pipeline.yaml_loader import Path as DataPath

PATCH_SHAPE = (
    "a mapping of the keys to change (a JSON merge patch: mappings merge, other values replace, "
    "null removes a key)"
)


def check_prompt_choice(
    ep: Endpoint, spec: Any, params: Mapping[str, Any], path: DataPath, report: Reporter
) -> None:
    """Exactly one of ``prompt`` (or ``prompts``, or a stage's template) and its alternatives."""
    prompted = spec.prompt is not None or getattr(spec, "prompts", None) is not None
    matrix = spec.matrix or {}
    for group in ep.one_of:
        if "prompt" not in group:
            continue
        others = [n for n in group if n != "prompt" and (params.get(n) is not None or n in matrix)]
        names = " or ".join(f"`{name}`" for name in group)
        if prompted and others:
            report.at(_written(others[0], spec, path), f"give {names}, not both")
        elif not prompted and not others:
            stage = path[-2:-1] == ("then",)
            report.at(path, f"{ep.op} needs {names}" + ("" if stage else " (or `prompts`)"))


def _written(name: str, spec: Any, path: DataPath) -> DataPath:
    """Where a field of a job was written: on the job, in its matrix, or in `defaults`."""
    if name in spec.params:
        return (*path, name)
    if spec.matrix and name in spec.matrix:
        return (*path, "matrix", name)
    return ("defaults", name)


def stage_objects(
    ep: Endpoint,
    spec: Any,
    params: Mapping[str, Any],
    parent_op: str | None,
    path: DataPath,
    report: Reporter,
) -> dict[str, Any]:
    """The objects a stage's ``"{json_prompt}"`` fields are checked as; reports misplaced ones.

    ``params`` are the stage's fields with `defaults` merged (placeholders
    unresolved). Each placeholder stands for a valid example of its object,
    so that the rest of the request (its overrides) is checked too.
    """
    parent = endpoints.endpoint(parent_op) if parent_op is not None else None
    objects: dict[str, Any] = {}
    for item in ep.structured:
        if params.get(item.name) != placeholder(item.name):
            continue
        objects[item.name] = item.example()
        if parent is None or parent.answer is None or parent.answer.name != item.name:
            where = _written(item.name, spec, path)
            givers = [e.op for e in endpoints.CATALOG.values() if e.answer and e.answer.name == item.name]
            report.at(
                where,
                f"{placeholder(item.name)} is the answer of {' or '.join(givers) or 'no op'}: "
                f"use it in a `then:` stage after one",
            )
    return objects


def check_overrides(
    ep: Endpoint, spec: Any, params: Mapping[str, Any], path: DataPath, report: Reporter
) -> None:
    """Each ``<field>_overrides`` is a mapping, and its field is given (or may come from the rows)."""
    rows_may_say = isinstance(getattr(spec, "prompts", None), str)
    for item in ep.structured:
        key = overrides_key(item.name)
        if key not in spec.params:
            continue
        if not isinstance(spec.params[key], Mapping):
            report.at((*path, key), PATCH_SHAPE)
        elif params.get(item.name) is None and not rows_may_say:
            report.at((*path, key), f"changes a `{item.name}`: give one")


def template_names(parent_op: str) -> set[str]:
    """The placeholders a stage's prompt template may use after ``parent_op``."""
    return {"id", "prompt"} if endpoints.endpoint(parent_op).makes_images else {"id", "description"}


def check_prompt_template(template: str, parent_op: str, path: DataPath, report: Reporter) -> None:
    """A stage's prompt template uses only the placeholders its parent fills."""
    allowed = template_names(parent_op)
    try:
        names = [f for _lit, f, _s, _c in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        report.at(path, f"bad template: {exc} (write literal braces as {{{{ and }}}})")
        return
    answer = endpoints.endpoint(parent_op).answer
    for name in names:
        if name in allowed:
            continue
        hint = ""
        if answer is not None and name == answer.name:
            hint = f' (a field written `{name}: "{placeholder(name)}"` takes the whole object)'
        report.at(
            path,
            f"unknown placeholder {{{name}}}; after {parent_op} use "
            + ", ".join("{" + a + "}" for a in sorted(allowed))
            + hint,
        )
