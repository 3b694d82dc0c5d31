"""Where the ledger lives (SPEC §11): beside its manifest, found from any folder, never made by a reader.

The commands run in this process (click's runner) from the working
directories under test, against the fake server on a thread of its own
(`threaded_server`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.fake_server import FakeServer

JOBS = """\
jobs:
  - op: generate
    prompts: [a red kite, a blue kite, a green kite]
    num_images: 2
"""


def project(root: Path, server: FakeServer) -> Path:
    """``root/project/m.yaml``: three 2-image jobs against ``server``, output under the project."""
    folder = root / "project"
    folder.mkdir()
    manifest = folder / "m.yaml"
    manifest.write_text(f"version: 1\nname: kites\nprovider:\n  base_url: {server.url}\n{JOBS}")
    return manifest


def ideobatch(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """`ideobatch ARGS` run from ``cwd``."""
    with monkeypatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(main, list(args))


def test_a_manifest_finds_its_ledger_from_any_working_directory(
    tmp_path: Path, threaded_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from its folder; then run, plan and status from two others: no request, all done, same spend."""
    manifest = project(tmp_path, threaded_server)
    first = ideobatch(manifest.parent, monkeypatch, "run", "m.yaml", "--quiet", "--json")
    assert first.exit_code == 0, first.output
    assert len(threaded_server.state.log) == 3
    spend = json.loads(first.stdout)["spend_usd"]
    assert (manifest.parent / ".ideobatch" / "ledger.db").is_file()

    for cwd in (tmp_path, tmp_path / "elsewhere" / "deeper"):
        cwd.mkdir(parents=True, exist_ok=True)
        shown = str(manifest.relative_to(cwd)) if cwd == tmp_path else str(manifest)
        again = ideobatch(cwd, monkeypatch, "run", shown, "--quiet", "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["jobs"]["succeeded"] == 3
        plan = ideobatch(cwd, monkeypatch, "plan", shown, "--json")
        assert plan.exit_code == 0, plan.output
        report = json.loads(plan.stdout)
        assert (report["done"], report["to_run"], report["ledger_found"]) == (3, 0, True)
        status = ideobatch(cwd, monkeypatch, "status", shown, "--json")
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["spend_usd"] == spend
        assert not (cwd / ".ideobatch").exists()
    assert len(threaded_server.state.log) == 3  # nothing was sent again


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("export",),
        ("gallery",),
        ("retry", "--failed"),
        ("status", "m.yaml"),
        ("export", "m.yaml"),
    ],
)
def test_readers_in_a_folder_without_a_ledger_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """Exit 5, naming where they looked (beside the manifest, or here), and the folder stays as it was."""
    monkeypatch.delenv("IDEOBATCH_LEDGER", raising=False)
    (tmp_path / "m.yaml").write_text("version: 1\nname: kites\n" + JOBS)
    result = ideobatch(tmp_path, monkeypatch, *args)
    assert result.exit_code == 5, result.output
    looked = tmp_path / ".ideobatch" / "ledger.db"
    assert f"there is no ledger at {looked} (" in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


def test_a_manifest_path_that_names_no_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status nope.yaml`: exit 2 on the missing file, not a search for a ledger beside nothing."""
    monkeypatch.delenv("IDEOBATCH_LEDGER", raising=False)
    result = ideobatch(tmp_path, monkeypatch, "status", "nope.yaml")
    assert result.exit_code == 2, result.output
    assert "nope.yaml: no such manifest file" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_plan_without_a_ledger_says_nothing_is_done_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan` reads: no ledger means nothing done yet, said with where it looked."""
    monkeypatch.delenv("IDEOBATCH_LEDGER", raising=False)
    (tmp_path / "m.yaml").write_text("version: 1\nname: kites\n" + JOBS)
    result = ideobatch(tmp_path.parent, monkeypatch, "plan", str(tmp_path / "m.yaml"))
    assert result.exit_code == 0, result.output
    assert "0 already done, 3 to run" in result.stdout
    assert f"ledger {tmp_path}/.ideobatch/ledger.db (the ledger kept beside the manifest" in result.stdout
    assert "none there yet, so nothing is done (none was created)" in result.stdout
    assert "disk: about 9.4 MB for the images left" in result.stdout  # 3 jobs x 2 images of ~1 MP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


def test_a_ledger_an_earlier_release_made_in_the_working_directory_is_used_and_can_be_moved(
    tmp_path: Path, threaded_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` finds the old ledger (no request), says how to move it; once moved, any folder finds it."""
    manifest = project(tmp_path, threaded_server)
    old = tmp_path / "old-cwd"
    old.mkdir()
    made = ideobatch(
        old, monkeypatch, "run", str(manifest), "--quiet", "--ledger", "sqlite:///.ideobatch/ledger.db"
    )
    assert made.exit_code == 0, made.output
    assert len(threaded_server.state.log) == 3

    again = ideobatch(old, monkeypatch, "run", str(manifest), "--quiet")
    assert again.exit_code == 0, again.output
    assert len(threaded_server.state.log) == 3
    assert "it knows this manifest, and none is beside the manifest yet" in again.stderr
    assert not (manifest.parent / ".ideobatch").exists()

    move = again.stderr.split("move it there with: ", 1)[1].strip()
    subprocess.run(move, shell=True, check=True, cwd=old)
    assert (manifest.parent / ".ideobatch" / "ledger.db").is_file()
    moved = ideobatch(tmp_path, monkeypatch, "run", str(manifest), "--quiet")
    assert moved.exit_code == 0, moved.output
    assert "warning" not in moved.stderr
    assert len(threaded_server.state.log) == 3


def test_run_warns_when_the_output_folder_holds_images_its_ledger_does_not_know(
    tmp_path: Path, threaded_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second ledger over the same output folder: the run says so before paying again."""
    manifest = project(tmp_path, threaded_server)
    first = ideobatch(manifest.parent, monkeypatch, "run", "m.yaml", "--quiet")
    assert first.exit_code == 0, first.output
    assert "does not know" not in first.stderr
    other = ideobatch(
        manifest.parent, monkeypatch, "run", "m.yaml", "--quiet", "--ledger", "sqlite:///other.db"
    )
    assert other.exit_code == 0, other.output
    out = manifest.parent / "out" / "kites"
    assert (
        f"the output folder {out} already holds images this ledger does not know (all of the 6"
        in other.stderr
    )
