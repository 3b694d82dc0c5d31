"""Text no ledger can store (NULs, lone surrogates) never makes a paid call be paid again (SPEC §6).

From the user it is refused before anything is sent; from the API, where the
call is already billed, it is cleaned, recorded and reported. Run against
SQLite and the real PostgreSQL (which refuses a NUL in text).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import ManifestError
from pipeline.fake_server import FakeServer
from pipeline.fake_server.api import MAGIC_SUFFIX
from pipeline.ledger.repository import opened_ledger
from tests.integration.conftest import run, write_manifest

DIRTY = "\x00 tail \ud800"
CLEAN = " tail \ufffd"


async def stored(ledger_url: str) -> list[tuple[str, str | None, str | None]]:
    """(job key, enhanced prompt, description text) of every recorded result."""
    async with opened_ledger(ledger_url) as ledger:
        return [(row.job_key, row.enhanced_prompt, row.text) async for row in ledger.export_rows(None)]


async def test_dirty_enhanced_prompts_are_stored_cleaned_and_paid_once(
    tmp_path: Path, fake_server: FakeServer, ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL and a lone surrogate in the API's prompt: both jobs succeed, billed once, stored cleaned."""
    caplog.set_level(logging.WARNING, logger="ideobatch")
    fake_server.set_faults(response_text_suffix=DIRTY)
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one, two]\n")
    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger_url)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 2
    stats = fake_server.state.stats()
    assert (stats["billed"], stats["duplicate_billed"]) == (2, 0)
    rows = await stored(ledger_url)
    assert sorted(prompt for _key, prompt, _text in rows) == [
        f"one{MAGIC_SUFFIX}{CLEAN}",
        f"two{MAGIC_SUFFIX}{CLEAN}",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key, _prompt, _text in rows:
        mine = [w for w in warnings if w.startswith(f"job {key[:12]}: ")]
        assert len(mine) == 1, warnings
        assert "the API's prompt held NULs or lone surrogates" in mine[0]

    sent = len(fake_server.state.log)
    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger_url)
    assert code == 0, summary
    assert len(fake_server.state.log) == sent == 2


async def test_dirty_descriptions_are_stored_cleaned_and_feed_their_stage(
    tmp_path: Path, fake_server: FakeServer, ledger_url: str
) -> None:
    """Descriptions with a NUL and a lone surrogate are stored cleaned, and the chained prompt is clean."""
    fake_server.set_faults(response_text_suffix=DIRTY, descriptions_per_image=1)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    manifest = write_manifest(
        tmp_path,
        "- op: describe\n  images: [red.png]\n  then:\n"
        "    - op: generate\n      prompt: '{description}'\n      magic_prompt_option: 'OFF'\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger_url)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 2
    rows = await stored(ledger_url)
    (text,) = [t for _key, _prompt, t in rows if t is not None]
    assert text.endswith(CLEAN)
    (prompt,) = [p for _key, p, _text in rows if p is not None]
    # the child's prompt is the clean description; the API's echo of it gets the dirt once more
    assert prompt == text + CLEAN
    assert fake_server.state.stats()["duplicate_billed"] == 0


async def test_dirty_error_messages_are_recorded_cleaned(
    tmp_path: Path, fake_server: FakeServer, ledger_url: str
) -> None:
    """A 422 whose message holds a NUL and a lone surrogate fails its job with a clean message."""
    fake_server.set_faults(response_text_suffix=DIRTY, unsafe_word="forbidden")
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [fine, a forbidden one]\n")
    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger_url)
    assert code == 1, summary
    assert summary["failures"] == {"unsafe": 1}
    assert summary["jobs"]["succeeded"] == 1
    async with opened_ledger(ledger_url) as ledger:
        (failed,) = await ledger.failed_jobs(None)
    assert failed["message"].startswith("HTTP 422: ")
    assert failed["message"].endswith(CLEAN)


async def test_run_refuses_a_lone_surrogate_in_a_prompts_file_before_sending(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A JSONL prompt with a `\\ud800` escape stops `run` at validation: nothing is sent."""
    (tmp_path / "p.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "x\\ud800"}\n')
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: p.jsonl\n")
    with pytest.raises(ManifestError) as caught:
        await run(manifest, fake_server, tmp_path)
    assert "p.jsonl:2: prompt: contains a lone surrogate (U+D800)" in str(caught.value)
    assert fake_server.state.log == []
