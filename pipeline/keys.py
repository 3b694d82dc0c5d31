"""Job keys: a stable identity for each unit of paid work (SPEC §4).

A key is the sha256 of the canonical JSON of the op, the full request, the
identity of the source image (its URL, or the sha256 of the file's bytes) and
the replica index, and of the identities of its other input files (a mask,
references) when it has any. Reordering YAML keys or editing another job
keeps a key; changing anything in the request or any input makes a new one.
Chained children hash their parent's key, their stage and their index within
the parent's results.

A job without other inputs hashes exactly what ideobatch 0.1.0 hashed, so
ledgers planned by it keep every key (`tests/integration/test_legacy_ledger.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

KEY_VERSION = 1


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def job_key(
    op: str,
    request: Mapping[str, Any],
    source: str | None,
    replica: int,
    inputs: Sequence[tuple[str, str]] = (),
) -> str:
    """The key of a top-level job; ``inputs`` are its other files as (role, identity), in order."""
    return _digest({"op": op, "request": request, "source": source, "replica": replica}, inputs)


def child_key(
    parent_key: str,
    stage: str,
    index: int,
    op: str,
    request: Mapping[str, Any],
    replica: int,
    inputs: Sequence[tuple[str, str]] = (),
) -> str:
    """The key of a chained job: its parent's key, its stage, its result index (and other inputs)."""
    fields = {"parent": parent_key, "stage": stage, "index": index, "op": op, "request": request}
    return _digest({**fields, "replica": replica}, inputs)


def _digest(fields: dict[str, Any], inputs: Sequence[tuple[str, str]]) -> str:
    """sha256 of the canonical JSON of ``fields``, the key version, and the inputs when there are any."""
    payload: dict[str, Any] = {"v": KEY_VERSION, **fields}
    if inputs:
        payload["inputs"] = [list(pair) for pair in inputs]
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
