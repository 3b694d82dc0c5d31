"""The resume command printed after an interrupt, and shell completion (README)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main, resume_command, run, worker


def test_resume_command_repeats_the_options_typed_quoted_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Arguments and options as given, shell-quoted; a ledger password becomes ***; defaults are left out."""
    monkeypatch.delenv("IDEOBATCH_LEDGER", raising=False)
    args = ["my jobs.yaml", "--ledger", "postgresql://bob:s3cret@db/ideo", "--out", "out dir", "-q", "-vv"]
    with run.make_context("run", args) as ctx, ctx:
        assert resume_command() == (
            "ideobatch run 'my jobs.yaml' --ledger 'postgresql://bob:***@db/ideo' "
            "--out 'out dir' -v -v --quiet"
        )


def test_resume_command_of_a_worker_names_its_ledger_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's ledger given by IDEOBATCH_LEDGER is written out, so the command works in any shell."""
    monkeypatch.setenv("IDEOBATCH_LEDGER", "sqlite:////srv/ledger.db")
    with worker.make_context("worker", ["--base-url", "http://127.0.0.1:8765"]) as ctx, ctx:
        assert resume_command() == (
            "ideobatch worker --ledger sqlite:////srv/ledger.db --base-url http://127.0.0.1:8765"
        )


def test_resume_command_leaves_a_ledger_password_from_the_environment_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line with `***` could not be pasted: the variable still holds the URL, so it is not repeated."""
    monkeypatch.setenv("IDEOBATCH_LEDGER", "postgresql://bob:s3cret@db/ideo")
    with worker.make_context("worker", ["--follow"]) as ctx, ctx:
        assert resume_command() == "ideobatch worker --follow"


def test_bash_completion_script_is_available() -> None:
    """`_IDEOBATCH_COMPLETE=bash_source ideobatch` prints click's completion script (README)."""
    result = CliRunner().invoke(main, [], env={"_IDEOBATCH_COMPLETE": "bash_source"}, prog_name="ideobatch")
    assert result.exit_code == 0
    assert "_ideobatch_completion" in result.output
