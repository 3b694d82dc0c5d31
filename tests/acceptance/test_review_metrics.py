"""/metrics scraped while `ideobatch run` works in another process, checked against `status --json`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.fake_server import FakeServer
from pipeline.ledger.repository import Ledger
from pipeline.reporting import status_summary
from pipeline.review.app import create_app
from pipeline.review.state import ReviewOptions
from tests.acceptance.conftest import finish, manifest_for, start

PROMPTS = [f"a metered lynx {i}" for i in range(28)] + ["a forbidden lynx", "another forbidden lynx"]
Samples = dict[tuple[str, str], float]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    """Wait until ``check()`` holds, looking again every 50 ms (the ledger has no change feed)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def scrape(client: TestClient[object, object]) -> Samples:
    """``(sample name, its label other than manifest) -> value`` of one /metrics answer."""
    text = await (await client.get("/metrics")).text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "manifest"}
            assert sample.labels.get("manifest", "acc") == "acc"
            samples[(sample.name, ",".join(labels.values()))] = sample.value
    return samples


def agree(samples: Samples, status: dict[str, object]) -> None:
    """The scrape says what `status --json` says."""
    jobs = status["jobs"]
    images = status["images"]
    assert isinstance(jobs, dict)
    assert isinstance(images, dict)
    assert {state: samples[("ideobatch_jobs", state)] for state in jobs} == jobs
    assert {state: samples[("ideobatch_images", state)] for state in images} == images
    assert samples[("ideobatch_spend_usd_total", "")] == status["spend_usd"]
    assert samples[("ideobatch_in_doubt_total", "")] == status["in_doubt"]
    failures = {key[1]: value for key, value in samples.items() if key[0] == "ideobatch_failed_jobs"}
    assert failures == status["failures"]


async def test_metrics_during_a_run_agree_with_status(tmp_path: Path, server: FakeServer) -> None:
    """Mid-run (calls held) and at the end: jobs, images, spend, failures, in flight and 429s all agree."""
    server.set_faults(latency_ms=20, rate_429=0.25, unsafe_word="forbidden")
    manifest = manifest_for(
        tmp_path,
        server,
        f"  - op: generate\n    model: V_2_TURBO\n    prompts: {json.dumps(PROMPTS)}\n",
        extra="limits:\n  concurrency: 4\n",
    )
    url = f"sqlite:///{tmp_path}/ledger.db"
    process = await start("run", str(manifest), "--ledger", url, "--quiet", cwd=tmp_path)
    await server.state.wait_until(lambda s: s.stats()["billed"] >= 8, timeout_s=30)
    server.set_faults(rate_429=0.0)
    server.state.hold()
    ledger = await Ledger.open(url)
    client: TestClient[object, object] = TestClient(TestServer(create_app(ledger, ReviewOptions(url))))
    await client.start_server()
    try:
        stats = server.state.stats

        previous: list[Samples] = []

        async def settled() -> bool:
            """The ledger caught up with the server, and two scrapes in a row say the same."""
            samples = await scrape(client)
            by_status = stats()["by_status"]
            caught_up = stats()["inflight_images"] > 0 and (
                samples[("ideobatch_images_in_flight", "")],
                samples[("ideobatch_jobs", "succeeded")],
                samples[("ideobatch_jobs", "failed")],
                samples[("ideobatch_rate_limited_total", "")],
            ) == (
                stats()["inflight_images"],
                by_status.get("200", 0),
                by_status.get("422", 0),
                by_status.get("429", 0),
            )
            steady = previous[-1:] == [samples]
            previous.append(samples)
            return caught_up and steady

        await eventually(settled)
        during = previous[-1]
        agree(during, await status_summary(url, "acc"))
        assert await scrape(client) == during  # nothing moved while the calls were held
        assert 0 < during[("ideobatch_jobs", "succeeded")] < len(PROMPTS)
        assert during[("ideobatch_rate_limited_total", "")] > 0
        assert during[("ideobatch_requests_total", "429")] == during[("ideobatch_rate_limited_total", "")]

        server.state.release()
        code, _out, err = await finish(process)
        assert code == 1, err  # the two forbidden prompts failed
        after = await scrape(client)
        agree(after, await status_summary(url, "acc"))
        assert after[("ideobatch_images_in_flight", "")] == 0
        assert after[("ideobatch_jobs", "succeeded")] == len(PROMPTS) - 2
        assert after[("ideobatch_requests_total", "200")] == stats()["billed"]
        assert after[("ideobatch_rate_limited_total", "")] == stats()["by_status"].get("429", 0)
        assert after[("ideobatch_request_duration_seconds_count", "")] == stats()["requests"]
    finally:
        server.state.release()
        await client.close()
        await ledger.close()
