"""Job keys: a stable identity for each unit of paid work (SPEC §4).

A key is the sha256 of the canonical JSON of the op, the full request, the
identity of the source image (its URL, or the sha256 of the file's bytes) and
the replica index. Reordering YAML keys or editing another job keeps a key;
changing anything in the request makes a new one. Chained children hash their
parent's key, their stage and their index within the parent's results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_VERSION = 1


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def job_key(op: str, request: Mapping[str, Any], source: str | None, replica: int) -> str:
    """The key of a top-level job."""
    payload = canonical_json(
        {"v": KEY_VERSION, "op": op, "request": request, "source": source, "replica": replica}
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def child_key(
    parent_key: str, stage: str, index: int, op: str, request: Mapping[str, Any], replica: int
) -> str:
    """The key of a chained job: its parent's key, its stage, and its result index."""
    payload = canonical_json(
        {
            "v": KEY_VERSION,
            "parent": parent_key,
            "stage": stage,
            "index": index,
            "op": op,
            "request": request,
            "replica": replica,
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
