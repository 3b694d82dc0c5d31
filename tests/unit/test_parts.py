"""`run --processes N`'s other processes: what their command line shows, how their results add up."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import logs
from pipeline.parts import Parts, merge, tally_json, tally_of, worst
from pipeline.results import RunTally

SECRET_URL = "postgresql://ideobatch:hunter2@db.internal/ledger"


def test_a_parts_command_line_shows_neither_the_ledger_password_nor_the_key(tmp_path: Path) -> None:
    """`ps` shows the command line: the ledger URL (it may hold a password) goes in the environment."""
    handler = logging.FileHandler(tmp_path / "run.log")
    logs.log.addHandler(handler)  # as --log-file adds it
    try:
        command = Parts(1, SECRET_URL, "shop", lease_s=20.0).command()
    finally:
        logs.log.removeHandler(handler)
        handler.close()
    assert not [word for word in command if "hunter2" in word or "postgresql" in word]
    assert command[command.index("--manifest-name") + 1] == "shop"
    assert command[command.index("--log-file") + 1] == str(tmp_path / "run.log")


def test_the_worst_exit_code_of_the_processes_wins() -> None:
    """5 (ledger or output) before 3 (aborted) before 1 (a job failed) before 0."""
    assert worst([0, 0]) == 0
    assert worst([0, 1]) == 1
    assert worst([1, 3, 0]) == 3
    assert worst([3, 5, 1]) == 5
    assert worst([0, -9]) == 3  # killed by a signal: aborted


def test_tallies_read_back_from_the_processes_add_up() -> None:
    """A part's tally goes through JSON and is summed into the run's, failures by reason too."""
    mine = RunTally(succeeded=3, failed=1, spend_micros=100, failures={"unsafe": 1})
    theirs = tally_of(
        tally_json(RunTally(succeeded=2, failed=2, in_doubt=1, failures={"unsafe": 1, "download_failed": 1}))
    )
    merge(mine, theirs)
    assert (mine.succeeded, mine.failed, mine.in_doubt, mine.spend_micros) == (5, 3, 1, 100)
    assert mine.failures == {"unsafe": 2, "download_failed": 1}
