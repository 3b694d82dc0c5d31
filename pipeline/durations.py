"""Durations as people write them: ``500ms``, ``1s``, ``2m``, ``1h`` or a number of seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``500ms``, ``1s``, ``2m``, ``1h`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text such as 500ms, 1s, 2m, 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or text such as 500ms, 1s, 2m, 1h")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("a duration must be zero or more")
    return seconds
