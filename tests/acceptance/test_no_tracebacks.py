"""Hostile inputs and faults of issue 18, each through the real command: a message, never a traceback.

Each case sets the fake server's faults, writes its inputs, runs `ideobatch`
as a subprocess, and checks the exit code a user (or cron) gets and that
stderr holds no Python traceback. The behaviour behind each case has tests
of its own; this one guards what people read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import ideobatch, manifest_for

BOMB = "\n".join(
    ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
)


@dataclass(frozen=True)
class Case:
    """One command against one hostile input or fault, and the exit codes it may give."""

    name: str
    command: str
    codes: tuple[int, ...]
    jobs: str = "  - op: generate\n    prompts: [one, two]\n"
    extra: str = ""
    faults: dict[str, Any] = field(default_factory=dict)
    files: Callable[[Path], None] | None = None
    options: tuple[str, ...] = ()


def _surrogate_prompts(folder: Path) -> None:
    (folder / "p.jsonl").write_text('{"prompt": "ok"}\n{"prompt": "bad \\ud800"}\n')


def _bomb(folder: Path) -> None:
    (folder / "acc.yaml").write_text(BOMB + "\nversion: 1\nname: acc\njobs: [{op: generate, prompt: x}]\n")


def _damaged_ledger(folder: Path) -> None:
    (folder / "ledger.db").write_bytes(b"\xa5" * 8192)


CASES = [
    Case("yaml alias bomb", "validate", (2,), files=_bomb),
    Case("a NUL in a prompt", "validate", (2,), jobs='  - op: generate\n    prompt: "fox\\0"\n'),
    Case("a NUL in a prompt", "run", (2,), jobs='  - op: generate\n    prompt: "fox\\0"\n'),
    Case(
        "a lone surrogate in a prompts file",
        "run",
        (2,),
        jobs="  - op: generate\n    prompts: p.jsonl\n",
        files=_surrogate_prompts,
    ),
    Case("every response in pieces", "run", (0,), faults={"split_writes": 1.0}),
    Case(
        "images trickling past their deadline",
        "run",
        (1,),
        extra="timeouts:\n  download: 200ms\n",
        faults={"trickle_bps": 400},
    ),
    Case(
        "dirty text from the API",
        "run",
        (0,),
        faults={"response_text_suffix": "\x00 \ud800 end"},
    ),
    Case(
        "5xx pages quoting the key, cut inside it",
        "run",
        (0, 1),
        faults={"rate_5xx": 0.5, "echo_auth_in_errors": True, "error_padding": 490},
        extra="retry:\n  attempts: 20\n",
    ),
    Case(
        "an image URL redirected to a private address",
        "run",
        (1,),
        faults={"download_redirect_url": "http://10.11.12.13/x.png"},
    ),
    Case(
        "a name template too long for any file system",
        "validate",
        (2,),
        extra="output:\n  name: " + "n" * 130 + "-{key}.{ext}\n",
    ),
    Case("an output folder the file system refuses", "run", (5,), options=("--out", "x" * 300)),
    Case("a damaged ledger", "status", (5,), files=_damaged_ledger),
    Case("a damaged ledger", "run", (5,), files=_damaged_ledger),
    Case(
        "an unreachable PostgreSQL ledger",
        "status",
        (5,),
        options=("--ledger", "postgresql://postgres@127.0.0.1:9/none"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command}: {c.name}")
async def test_no_traceback(tmp_path: Path, server: FakeServer, case: Case) -> None:
    """The command ends with its documented exit code and a message, never a Python traceback."""
    server.set_faults(**case.faults)
    manifest = manifest_for(tmp_path, server, case.jobs, extra=case.extra)
    if case.files is not None:
        case.files(tmp_path)
    options = case.options
    if "--ledger" not in options:
        options = (*options, "--ledger", f"sqlite:///{tmp_path / 'ledger.db'}")
    code, _out, err = await ideobatch(
        case.command, str(manifest), *options, cwd=tmp_path, env={"IDEOBATCH_LEDGER_RETRY": "300ms"}
    )
    assert "Traceback" not in err, err
    assert code in case.codes, (code, err)
    assert err.strip(), "a failing or faulty run says something on stderr"
