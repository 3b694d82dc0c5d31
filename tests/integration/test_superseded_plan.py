"""A plan overtaken by a newer one of the same manifest writes nothing more (SPEC §4, §6).

A run's first plan goes on beside its claims; if the manifest is edited and
planned again meanwhile (`plan --save`, another `run`), the newer plan's
withdrawals must stand: the older plan, still writing, may not make the jobs
the edit removed pending again (nor add the ones it had not reached), or the
run pays for prompts that are no longer in the manifest.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from pipeline import planning
from pipeline.ledger.repository import Ledger
from pipeline.manifest import load_manifest
from pipeline.settings import RunSettings
from tests.integration.conftest import write_manifest

PROMPTS = [f"superseded {i}" for i in range(30)]


def manifest(folder: Path, prompts: list[str]) -> Path:
    return write_manifest(folder, "- op: generate\n  model: V_2\n  prompts: [" + ", ".join(prompts) + "]\n")


async def pending_prompts(ledger: Ledger, manifest_id: int) -> set[str]:
    claim = await ledger.claim_jobs(manifest_id, "probe", 1000, 60.0)
    return {str(job.request.get("prompt")) for job in claim.jobs}


async def test_a_first_plan_overtaken_by_a_re_plan_revives_nothing_the_re_plan_removed(
    tmp_path: Path, ledger: Ledger
) -> None:
    path = manifest(tmp_path, PROMPTS)
    loaded = load_manifest(str(path))
    settings = RunSettings.from_manifest(loaded)
    # run A: its first 5 jobs written and claimable, the other 25 still to write
    first = await planning.start_plan(ledger, loaded, settings, first=5)
    assert not first.complete
    # meanwhile the manifest is cut to 3 prompts and planned again, in full
    path = manifest(tmp_path, PROMPTS[:3])
    record, counts = await planning.plan_into(ledger, load_manifest(str(path)), settings)
    assert counts is not None
    assert counts.withdrawn == 2
    # run A's planning goes on with the manifest as it read it
    await first.finish(ledger)
    assert await pending_prompts(ledger, record.id) == set(PROMPTS[:3])
    # the plan the ledger calls complete is the newer one: an unchanged manifest is not planned again
    stored = await ledger.get_manifest(settings.name)
    assert stored is not None
    assert stored.plan_complete
    assert stored.plan_fingerprint == planning.plan_fingerprint(load_manifest(str(path)))


async def test_a_plan_overtaken_at_its_first_batch_waits_for_the_newer_one(
    tmp_path: Path, ledger: Ledger
) -> None:
    """Two runs of one manifest started together: the overtaken one's planning ends with the other's.

    Its run claims meanwhile and must not end (nor call the manifest done)
    while the plan that has the manifest's jobs is still being written.
    """
    path = manifest(tmp_path, PROMPTS)
    loaded = load_manifest(str(path))
    settings = RunSettings.from_manifest(loaded)
    newer = await planning.start_plan(ledger, loaded, settings)  # saved, nothing written yet
    saved = await ledger.get_manifest(settings.name)
    assert saved is not None
    older = planning.Plan(saved, planning.PlanCounts(), {}, planning.expand(loaded), beside_a_run=True)
    older.record = dataclasses.replace(saved, plan_seq=saved.plan_seq - 1)
    waiting = asyncio.create_task(older.finish(ledger))
    await asyncio.sleep(0.5)
    assert not waiting.done(), "the overtaken plan ended while the newer one was not written"
    await newer.finish(ledger)
    await asyncio.wait_for(waiting, 5)
    assert len(await pending_prompts(ledger, saved.id)) == len(PROMPTS)
