"""The ``fake-server`` click command as a subprocess: startup line, flags, signals."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
import pytest

RUN = "from pipeline.fake_server.command import fake_server_command; fake_server_command()"
LISTENING = re.compile(r"^fake Ideogram server listening on (http://127\.0\.0\.1:(\d+))$")


async def start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
    match = LISTENING.match(line)
    assert match, line
    assert int(match.group(2)) > 0
    return process, match.group(1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_command_serves_with_its_flags_until_signalled(
    http: aiohttp.ClientSession, sig: signal.Signals
) -> None:
    """--port 0 prints the real URL; flags configure faults; SIGTERM/SIGINT stop it cleanly."""
    process, url = await start(
        "--port",
        "0",
        "--api-key",
        "k2",
        "--rate-limit",
        "3",
        "--unsafe-word",
        "boom",
        "--latency",
        "5",
        "--fail-rate",
        "0",
        "--url-ttl",
        "30",
        "--balance",
        "2",
        "--split-writes",
        "1",
        "--trickle-bps",
        "100000",
    )
    try:
        async with http.get(f"{url}/_control") as response:
            config = await response.json()
        assert (config["api_key"], config["inflight_limit"], config["unsafe_word"]) == ("k2", 3, "boom")
        assert (config["latency_ms"], config["url_ttl_s"], config["balance_usd"]) == (5, 30, 2)
        assert (config["split_writes"], config["trickle_bps"]) == (1.0, 100_000)
        body = {"image_request": {"prompt": "x", "num_images": 4}}
        headers = {"Authorization": "Bearer k2"}
        async with http.post(f"{url}/ideogram/generate", json=body, headers=headers) as response:
            assert response.status == 429
        body = {"image_request": {"prompt": "x"}}
        async with http.post(f"{url}/generate", json=body, headers={"Api-Key": "k2"}) as response:
            assert response.status == 200
    finally:
        process.send_signal(sig)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()


async def test_command_rejects_bad_flags() -> None:
    """An out-of-range rate is a usage error (exit 2)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN,
        "--rate-429",
        "1.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"rate-429" in stderr
