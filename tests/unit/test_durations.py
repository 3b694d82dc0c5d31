"""Durations as people write them, and as messages show them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.durations import human_duration, parse_duration


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (0.5, "0.5 s"),
        (1, "1 s"),
        (12.5, "12.5 s"),
        (60, "1 min"),
        (150.0, "2 min 30 s"),
        (1800, "30 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (86_400, "1 d"),
        (90_000, "1 d 1 h"),
    ],
)
def test_human_durations(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), -1, "-5s", "inf", True])
def test_durations_that_are_no_length_of_time_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("retry:\n  give_up_after", ".inf", "retry.give_up_after: a duration must be a finite number"),
        ("retry:\n  ledger_retry", ".nan", "retry.ledger_retry: a duration must be a finite number"),
        ("retry:\n  max", "-1", "retry.max: a duration must be zero or more"),
        ("timeouts:\n  download", "1e400", "timeouts.download: a duration must be a finite number"),
        ("limits:\n  budget_usd", ".inf", "limits.budget_usd: Input should be a finite number"),
        ("limits:\n  requests_per_minute", ".inf", "limits.requests_per_minute: Input should be a finite"),
        ("prices:\n  generate", ".nan", "prices.generate: Input should be a finite number"),
    ],
)
def test_a_manifest_with_an_endless_or_negative_setting_is_refused_with_its_line(
    tmp_path: Path, key: str, value: str, shown: str
) -> None:
    """Exit 2 with file:line: field, never a traceback (`budget_usd: .inf` was one, at `run`)."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\nname: d\n{key}: {value}\njobs:\n  - op: generate\n    prompt: a\n")
    result = CliRunner().invoke(main, ["validate", str(manifest)])
    assert result.exit_code == 2, result.output
    assert f"m.yaml:4: {shown}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--lease", "inf"), ("--lease", "nan"), ("--budget", "nan"), ("--budget", "inf"), ("--budget", "1e30")],
)
def test_an_endless_lease_or_budget_on_the_command_line_is_a_usage_error(option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["run", "nothere.yaml", option, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output
