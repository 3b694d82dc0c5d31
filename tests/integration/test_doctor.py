"""`ideobatch doctor`: each preflight check fails on its own, with its line and exit code; nothing sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline import doctor
from pipeline.cli import main
from pipeline.fake_server import FakeServer

CLOSED_PORT_PG = "postgresql://postgres@127.0.0.1:1/ideobatch_nowhere"
#: breaks one thing; returns the extra command-line arguments it needs
Breaker = Callable[[pytest.MonkeyPatch, Path], tuple[str, ...]]


def manifest_for(folder: Path, server: FakeServer, output: str = "out") -> Path:
    """Two 2-image jobs against ``server``."""
    manifest = folder / "m.yaml"
    manifest.write_text(
        f"version: 1\nname: preflight\nprovider:\n  base_url: {server.url}\noutput:\n  dir: {output}\n"
        "jobs:\n  - op: generate\n    prompts: [a mug, a bowl]\n    num_images: 2\n"
    )
    return manifest


def run_doctor(manifest: Path, *args: str) -> Result:
    """`ideobatch doctor MANIFEST ARGS --json`."""
    return CliRunner().invoke(main, ["doctor", str(manifest), *args, "--json"])


def verdicts(result: Result) -> dict[str, bool | None]:
    """Each check's outcome, by name."""
    return {check["name"]: check["ok"] for check in json.loads(result.stdout)["checks"]}


def test_every_check_passes_on_a_ready_manifest(tmp_path: Path, threaded_server: FakeServer) -> None:
    """Six checks, all ok, exit 0; the text report has one line per check."""
    manifest = manifest_for(tmp_path, threaded_server)
    result = run_doctor(manifest)
    assert result.exit_code == 0, result.output
    assert set(verdicts(result).values()) == {True}
    text = CliRunner().invoke(main, ["doctor", str(manifest)])
    assert [line.split()[:2] for line in text.stdout.splitlines()] == [
        ["ok", name] for name in ("manifest", "key", "ledger", "output", "disk", "provider")
    ]
    assert "about 6.3 MB needed" in text.stdout  # 4 images of about a megapixel, 1.5 bytes a pixel
    assert threaded_server.state.log == []
    assert not (tmp_path / ".ideobatch").exists()


def _no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    monkeypatch.delenv("CRAZYROUTER_API_KEY")
    return ()


def _closed_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    return ("--ledger", CLOSED_PORT_PG)


def _output_under_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    # tests run as root, so a read-only mode would not stop a write: a folder under a file does
    (tmp_path / "out").write_text("a file where the output folder should be")
    return ()


def _full_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    monkeypatch.setattr(doctor, "free_bytes", lambda _folder: 5_000_000)
    return ()


async def _unresolvable(host: str, port: int) -> list[str]:
    raise OSError(f"[Errno -2] Name or service not known: {host}")


def _no_dns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, ...]:
    monkeypatch.setattr(doctor, "resolve", _unresolvable)
    return ()


@pytest.mark.parametrize(
    ("breaks", "check", "code", "says"),
    [
        (_no_key, "key", 2, "CRAZYROUTER_API_KEY is not set"),
        (_closed_postgres, "ledger", 5, "postgresql://postgres@127.0.0.1:1/ideobatch_nowhere"),
        (_output_under_a_file, "output", 5, "is a file, not a folder"),
        (_full_disk, "disk", 5, "too small: 5.0 MB free, about 6.3 MB needed"),
        (_no_dns, "provider", 1, "does not resolve"),
    ],
    ids=["no-key", "postgres-unreachable", "output-unwritable", "disk-too-small", "host-unknown"],
)
def test_each_check_fails_alone(
    tmp_path: Path,
    threaded_server: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    breaks: Breaker,
    check: str,
    code: int,
    says: str,
) -> None:
    """One broken thing: its line fails with what to look at, the others pass, exit code, no request."""
    manifest = manifest_for(tmp_path, threaded_server)
    args = breaks(monkeypatch, tmp_path)
    result = run_doctor(manifest, *args)
    assert result.exit_code == code, result.output
    found = verdicts(result)
    assert found.pop(check) is False
    assert set(found.values()) == {True}
    detail = next(c["detail"] for c in json.loads(result.stdout)["checks"] if c["name"] == check)
    assert says in detail
    assert threaded_server.state.log == []


def test_an_invalid_manifest_fails_first_and_skips_the_rest(
    tmp_path: Path, threaded_server: FakeServer
) -> None:
    """The manifest line names its first problem; the checks that need it are skipped; exit 2."""
    manifest = manifest_for(tmp_path, threaded_server)
    manifest.write_text(manifest.read_text().replace("num_images: 2", "num_images: 20"))
    result = CliRunner().invoke(main, ["doctor", str(manifest)])
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"FAIL  manifest  1 problem(s), first: {manifest}:10: jobs[0].num_images:")
    assert [line.split()[0] for line in lines[1:]] == ["skip"] * 5
