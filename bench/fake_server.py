"""Throughput of the fake server: generate + download at concurrency 100, zero latency.

Starts ``fake-server --port 0`` in a subprocess (so server and client each get a
core), reads its URL from the first stdout line, then runs CONCURRENCY workers
that each loop "POST /generate (1 image), GET the image URL" for DURATION
seconds. Both the POST and the GET count as requests. Target: 1,500 req/s.

    python bench/fake_server.py [--duration 5] [--concurrency 100] [--dialect ideogram]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time

import aiohttp
import psutil

TARGET_RPS = 1500
DEFAULT_DURATION_S = 5.0
DEFAULT_CONCURRENCY = 100
WARMUP_S = 0.5
RUN = "from pipeline.fake_server.command import fake_server_command; fake_server_command()"
#: the request body, encoded once: the client's own work should not be what is measured
BODY = json.dumps({"image_request": {"prompt": "a benchmark", "num_images": 1}}).encode()
LISTENING = re.compile(r"listening on (http://\S+)")


async def start_server() -> tuple[asyncio.subprocess.Process, str]:
    """The fake server in a subprocess, and its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN, "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = LISTENING.search(line)
    if match is None:
        process.kill()
        await process.wait()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return process, match.group(1)


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Counter:
    """Requests completed, and failures."""

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.counting = False


async def worker(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], stop_at: float, count: Counter
) -> None:
    """Loop generate + download until the deadline."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        async with http.post(url, data=BODY, headers=headers) as response:
            if response.status != 200:
                count.failures += 1
                continue
            image_url = json.loads(await response.read())["data"][0]["url"]
        async with http.get(image_url) as response:
            await response.read()
            ok = response.status == 200
        if count.counting:
            count.requests += 2
            count.failures += not ok


async def run(duration: float, concurrency: int, dialect: str) -> float:
    """Requests per second measured over ``duration`` after a warm-up."""
    process, base = await start_server()
    try:
        if dialect == "ideogram":
            url, headers = f"{base}/generate", {"Api-Key": "fake-key"}
        else:
            url, headers = f"{base}/ideogram/generate", {"Authorization": "Bearer fake-key"}
        headers["Content-Type"] = "application/json"
        connector = aiohttp.TCPConnector(limit=concurrency)
        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as http:
            loop = asyncio.get_running_loop()
            count = Counter()
            stop_at = loop.time() + WARMUP_S + duration
            tasks = [
                asyncio.create_task(worker(http, url, headers, stop_at, count)) for _ in range(concurrency)
            ]
            await asyncio.sleep(WARMUP_S)
            count.counting = True
            server_cpu = _cpu_seconds(process.pid)
            client_cpu = time.process_time()
            started = time.perf_counter()
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
            server_cpu = _cpu_seconds(process.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
        rps = count.requests / elapsed
        print(f"dialect {dialect}, concurrency {concurrency}, {elapsed:.1f} s")
        print(f"requests: {count.requests} (POST + GET), failures: {count.failures}")
        # a share well under 100% means other processes took the cores: the figure is low
        print(
            f"cpu: server {server_cpu / elapsed:.0%} ({server_cpu / count.requests * 1e6:.0f} us/req), "
            f"client {client_cpu / elapsed:.0%} ({client_cpu / count.requests * 1e6:.0f} us/req)"
        )
        print(f"throughput: {rps:,.0f} req/s; target {TARGET_RPS:,} req/s; ratio {rps / TARGET_RPS:.2f}")
        return rps
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--dialect", choices=["ideogram", "crazyrouter"], default="ideogram")
    args = parser.parse_args()
    rps = asyncio.run(run(args.duration, args.concurrency, args.dialect))
    sys.exit(0 if rps >= TARGET_RPS else 1)


if __name__ == "__main__":
    main()
