"""Manifests are read as YAML 1.2 (core schema): no base-60 numbers, no yes/no booleans."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pipeline.errors import ManifestError
from pipeline.yaml_loader import load_with_lines


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("16:9", "16:9"),  # YAML 1.1: 969 (base 60)
        ("1:30", "1:30"),  # YAML 1.1: 90
        ("190:20:30", "190:20:30"),
        ("yes", "yes"),  # YAML 1.1: True
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("ON", "ON"),
        ("OFF", "OFF"),
        ("y", "y"),
        ("0o17", 15),  # YAML 1.1: the string "0o17"
        ("0x1F", 31),
        ("012", 12),  # YAML 1.1: octal 10
        ("-7", -7),
        ("+12", 12),
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("1e3", 1000.0),  # YAML 1.1: the string "1e3"
        (".5", 0.5),
        ("-.inf", -math.inf),
        ("true", True),
        ("FALSE", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("2024-01-02", "2024-01-02"),  # YAML 1.1: a date
        ("=", "="),
        ('"1:30"', "1:30"),
        ("!!str 0o17", "0o17"),
    ],
)
def test_plain_scalars_are_read_by_the_yaml_1_2_core_schema(written: str, read: Any) -> None:
    """Each plain scalar gets the type and value YAML 1.2's core schema gives it."""
    data, _lines = load_with_lines(f"value: {written}\n", "m.yaml")
    assert data["value"] == read
    assert type(data["value"]) is type(read)


def test_nan_is_a_float() -> None:
    """`.nan` is the core schema's not-a-number."""
    data, _lines = load_with_lines("value: .NaN\n", "m.yaml")
    assert math.isnan(data["value"])


def test_an_explicit_int_tag_on_text_is_a_located_error() -> None:
    """`!!int 1:30` is refused with its line, not a traceback."""
    with pytest.raises(ManifestError) as caught:
        load_with_lines("a: 1\nvalue: !!int 1:30\n", "m.yaml")
    assert str(caught.value.problems[0]).startswith("m.yaml:2: ")
    assert "not a YAML 1.2 integer" in str(caught.value.problems[0])
