"""Structured prompts in requests and stages: a parent's answer object, and overrides of its parts.

Ideogram 4.0's describe answers with a JSON prompt (`pipeline.endpoints.Structured`)
that its generate takes back as ``json_prompt``. In a `then:` stage after
such a describe, a field written exactly ``"{json_prompt}"`` becomes the
parent's object, and ``json_prompt_overrides`` changes parts of it:

    then:
      - op: v4-generate
        json_prompt: "{json_prompt}"
        json_prompt_overrides:
          style_description: {art_style: watercolor illustration, medium: watercolor on paper}

``<field>_overrides`` is a JSON Merge Patch (RFC 7396) applied to the object:
a mapping is merged key by key, recursively; any other value (text, a list)
replaces what was there; ``null`` removes the key. It applies as well to a
``json_prompt`` written out on a job (or given by a prompts file's rows).
The request keeps the resolved object, so a child's job key is derived from
exactly what is sent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from pipeline.endpoints import Endpoint

#: ``json_prompt_overrides`` is the merge patch of the field ``json_prompt``
OVERRIDES_SUFFIX = "_overrides"


def placeholder(name: str) -> str:
    """How a stage field asks for its parent's object: ``"{json_prompt}"``."""
    return "{" + name + "}"


def overrides_key(name: str) -> str:
    """The manifest key of the merge patch of field ``name``."""
    return name + OVERRIDES_SUFFIX


def overrides_keys(ep: Endpoint) -> frozenset[str]:
    """The ``<field>_overrides`` keys an op's jobs may carry."""
    return frozenset(overrides_key(s.name) for s in ep.structured)


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` changed by ``patch`` as RFC 7396 says (neither argument is changed)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def resolve(
    ep: Endpoint,
    request: dict[str, Any],
    overrides: Mapping[str, Any],
    objects: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A request with its structured fields resolved (changed in place, and returned).

    A field written as its placeholder becomes the object of that name in
    ``objects`` (a parent's answer); then each ``<field>_overrides`` in
    ``overrides`` patches its field when the field holds an object. A
    placeholder with no object to take stays as written (validation says why).
    """
    for item in ep.structured:
        value = request.get(item.name)
        if objects is not None and value == placeholder(item.name) and item.name in objects:
            request[item.name] = copy.deepcopy(objects[item.name])
        patch = overrides.get(overrides_key(item.name))
        if isinstance(patch, Mapping) and isinstance(request.get(item.name), Mapping):
            request[item.name] = merge_patch(request[item.name], patch)
    return request


def summary_of(ep: Endpoint, request: Mapping[str, Any]) -> str | None:
    """The summary of the structured prompt a request sends (None when it sends none)."""
    for item in ep.structured:
        value = request.get(item.name)
        if isinstance(value, Mapping):
            summary = value.get(item.summary)
            return summary if isinstance(summary, str) else ""
    return None


def answer_of(ep: Endpoint, text: str) -> tuple[str, dict[str, Any]]:
    """What a recorded answer gives a stage: ``{description}``, and the objects by name.

    An op whose answer is a list of texts gives each text as it is; an op
    whose answer is one object (recorded as its JSON text) gives its summary
    key's text as ``{description}`` and the object under its name.
    """
    if ep.answer is None:
        return text, {}
    try:
        value = json.loads(text)
    except ValueError:
        return "", {}
    if not isinstance(value, dict):
        return "", {}
    summary = value.get(ep.answer.summary)
    return (summary if isinstance(summary, str) else ""), {ep.answer.name: value}
