"""`--log-format json` and `--log-file`: one JSON object per line, for cron and log shippers (SPEC §11)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import ideobatch, manifest_for

ISO_WITH_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as JSON (fails on the first that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_json_log_lines_parse_and_carry_time_level_event_manifest_counts(
    tmp_path: Path, server: FakeServer
) -> None:
    """A run's stderr and log file are JSON lines with an ISO time, level, event, manifest and end counts."""
    server.set_faults(unsafe_word="forbidden")
    manifest = manifest_for(
        tmp_path, server, "  - op: generate\n    prompts: [one, a forbidden two, three]\n"
    )
    log_file = tmp_path / "run.log"
    code, out, err = await ideobatch(
        "run",
        str(manifest),
        "--ledger",
        f"sqlite:///{tmp_path}/ledger.db",
        "--log-format",
        "json",
        "--log-file",
        str(log_file),
        "--json",
        cwd=tmp_path,
    )
    assert code == 1
    assert json.loads(out)["jobs"]["failed"] == 1
    for lines in (json_lines(err), json_lines(log_file.read_text())):
        assert lines
        for line in lines:
            assert ISO_WITH_DATE.match(line["time"]), line
            assert line["level"] in ("debug", "info", "warning", "error")
            assert line["event"]
            assert isinstance(line["message"], str)
            assert line["manifest"] == "acc"
        end = next(line for line in lines if line["event"] == "run_end")
        assert end["counts"]["done"] == 3
        assert end["counts"]["failed"] == 1
        assert end["counts"]["spend_usd"] == 0.16


def test_usage_errors_are_json_lines_too(tmp_path: Path) -> None:
    """With --log-format json a user mistake is one JSON error line (still exit 2)."""
    ledger = f"sqlite:///{tmp_path}/empty.db"
    # `status` creates no ledger: make an empty one
    assert CliRunner().invoke(main, ["db", "upgrade", "--ledger", ledger]).exit_code == 0
    result = CliRunner().invoke(main, ["status", "nope", "--ledger", ledger, "--log-format", "json"])
    assert result.exit_code == 2
    [line] = json_lines(result.stderr)
    assert line["level"] == "error"
    assert line["message"] == "error: the ledger has no manifest 'nope' (plan or run it first)"


def test_an_unwritable_log_file_is_a_usage_error(tmp_path: Path) -> None:
    """--log-file in a folder that does not exist: one clear message, exit 2, no traceback."""
    target = tmp_path / "missing" / "run.log"
    result = CliRunner().invoke(main, ["status", "--log-file", str(target)])
    assert result.exit_code == 2
    assert f"cannot write the log file {target}" in result.stderr
    assert "Traceback" not in result.output
