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
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("a duration must be a finite number of seconds (such as 90, 30s, 5m, 1h)")
    if seconds < 0:
        raise ValueError("a duration must be zero or more")
    return seconds


def human_duration(seconds: float) -> str:
    """A duration as people read it: ``0.25 s``, ``12.5 s``, ``2 min 30 s``, ``1 h 30 min``, ``2 d 3 h``."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return f"{seconds} s"
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds < 1:
        return f"{float(f'{seconds:.2g}'):g} s"
    if round(seconds, 1) < 60:
        return f"{round(seconds, 1):g} s"
    whole = round(seconds)
    if whole < 3600:
        return _two(*divmod(whole, 60), "min", "s")
    if whole < 86_400:
        minutes = round(whole / 60)
        return _two(*divmod(minutes, 60), "h", "min") if minutes < 1440 else "1 d"
    hours = round(whole / 3600)
    return _two(*divmod(hours, 24), "d", "h")


def _two(big: int, small: int, big_unit: str, small_unit: str) -> str:
    return f"{big} {big_unit} {small} {small_unit}" if small else f"{big} {big_unit}"
