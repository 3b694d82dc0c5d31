"""The API key never appears in output, logs, the ledger, exports or the gallery (SPEC §3 Secrets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.redaction import MIN_SECRET_CHARS
from pipeline.wire import MAX_MESSAGE_CHARS
from tests.acceptance.conftest import finish, manifest_for, start

CANARY = "sk-CANARY-7f3e9a1c5b2d4e6f8a0b1c2d3e4f5a6b"
#: what a leak would leave: the key, or any prefix of it this long or longer
LEAK = CANARY[:MIN_SECRET_CHARS]
#: the fake server's quote of the header, up to the key (crazyrouter sends `Bearer KEY`)
QUOTE = "request headers: Authorization: Bearer "


# with padding, the recorded message's cut at MAX_MESSAGE_CHARS falls in the middle of the
# quoted key: what would be left is the key's first half
@pytest.mark.parametrize(
    "padding",
    [0, MAX_MESSAGE_CHARS - len(QUOTE) - len(CANARY) // 2],
    ids=["whole-key-quoted", "message-cut-inside-the-key"],
)
async def test_canary_key_appears_nowhere(tmp_path: Path, padding: int) -> None:
    """After failing runs against a server quoting our auth header back, no 8-char key prefix is anywhere.

    That includes the log files, in both formats.
    """
    config = FaultConfig(
        api_key=CANARY,
        seed=5,
        rate_5xx=0.3,
        rate_reset=0.1,
        unsafe_word="forbidden",
        echo_auth_in_errors=True,
        error_padding=padding,
    )
    ledger = ("--ledger", f"sqlite:///{tmp_path}/ledger.db")
    async with FakeServer(config) as server:
        body = "  - op: generate\n    prompts: [one, two, three, a forbidden one, five, six, seven, eight]\n"
        manifest = manifest_for(tmp_path, server, body, extra="retry:\n  attempts: 2\n")
        outputs = []
        json_log = ("--log-format", "json", "--log-file", str(tmp_path / "run-json.log"))
        text_log = ("--log-file", str(tmp_path / "run-text.log"), "-v")
        for args in (
            ("run", str(manifest), *ledger, "--json", *json_log),
            ("run", str(manifest), *ledger, *text_log),
        ):
            outputs.append((args[0], *(await finish(await start(*args, cwd=tmp_path, key=CANARY)))))
        echoed = server.state.stats()["faults"].get("5xx", 0)
    reports = [
        ("status", "acc", *ledger, "--json", "--log-file", str(tmp_path / "status.log")),
        ("export", "acc", *ledger, "--format", "csv", "--out", str(tmp_path / "rows.csv")),
        ("export", "acc", *ledger, "--format", "jsonl"),
        ("gallery", "acc", *ledger, "--out", str(tmp_path / "gallery.html")),
        ("plan", str(manifest), *ledger),
    ]
    for args in reports:  # in-process, each in a thread with its own event loop
        result = await asyncio.to_thread(
            CliRunner().invoke, main, list(args), env={"CRAZYROUTER_API_KEY": CANARY}
        )
        outputs.append((args[0], result.exit_code, result.stdout, result.stderr))
    assert echoed > 0, "some 5xx pages quoted the key back"
    assert json.loads(outputs[0][2])["failures"], "the runs had failures"
    for name, code, out, err in outputs:
        assert code in (0, 1), (name, err)
        assert LEAK not in out, name
        assert LEAK not in err, name
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    ledger_bytes = b"".join(path.read_bytes() for path in files if path.name.startswith("ledger.db"))
    assert f"{QUOTE}[redacted]".encode() in ledger_bytes, "the quoted headers were recorded, redacted"
    assert any(path.name == "gallery.html" for path in files)
    assert (tmp_path / "run-json.log").stat().st_size > 0
    assert (tmp_path / "run-text.log").stat().st_size > 0
    for path in files:
        assert LEAK.encode() not in path.read_bytes(), path
