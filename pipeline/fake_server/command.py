"""``ideobatch fake-server``: run the fake Ideogram API until SIGINT or SIGTERM.

Prints ``fake Ideogram server listening on http://HOST:PORT`` (the real port,
also with ``--port 0``) on stdout as soon as it accepts connections, so a
parent process can read the URL from the first line.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from pipeline.fake_server.config import DEFAULT_API_KEY, DEFAULT_URL_TTL_S, FaultConfig
from pipeline.fake_server.server import DEFAULT_HOST, FakeServer

DEFAULT_PORT = 8765
LISTENING = "fake Ideogram server listening on {url}"

_rate = click.FloatRange(0.0, 1.0)


@click.command("fake-server")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port (0: a free one).")
@click.option("--latency", "latency_ms", default=0.0, type=float, help="Call latency in ms.")
@click.option("--latency-jitter", "latency_jitter_ms", default=0.0, type=float, help="± jitter in ms.")
@click.option(
    "--latency-dist",
    default="uniform",
    show_default=True,
    type=click.Choice(["fixed", "uniform", "exponential"]),
    help="Latency distribution.",
)
@click.option("--download-latency", "download_latency_ms", default=0.0, type=float, help="Image GET ms.")
@click.option("--fail-rate", "rate_5xx", default=0.0, type=_rate, help="Share of calls answered 500/502/503.")
@click.option(
    "--rate-limit",
    "inflight_limit",
    default=0,
    type=click.IntRange(min=0),
    help="Images allowed in flight (0: no limit); more gets 429.",
)
@click.option("--rate-429", "rate_429", default=0.0, type=_rate, help="Share of calls given 429.")
@click.option(
    "--retry-after",
    default="seconds",
    show_default=True,
    type=click.Choice(["seconds", "date", "none", "mixed"]),
    help="How a 429 carries Retry-After.",
)
@click.option("--retry-after-s", default=1, type=click.IntRange(min=0), help="Retry-After value.")
@click.option("--reset-rate", "rate_reset", default=0.0, type=_rate, help="Billed, then reset.")
@click.option("--truncate-rate", "rate_truncate", default=0.0, type=_rate, help="Billed, body cut short.")
@click.option(
    "--split-writes",
    "split_writes",
    default=0.0,
    type=_rate,
    help="Share of responses written in pieces at random byte boundaries (headers too).",
)
@click.option(
    "--trickle-bps", default=0, type=click.IntRange(min=0), help="Send bodies at this many bytes/s (0: off)."
)
@click.option("--api-key", default=DEFAULT_API_KEY, show_default=True, help="The accepted key.")
@click.option("--unsafe-word", default=None, help="Prompts with this word get 422.")
@click.option("--withheld-word", default=None, help="Prompts with this word get withheld images.")
@click.option("--url-ttl", "url_ttl_s", default=DEFAULT_URL_TTL_S, type=float, help="Image URL life (s).")
@click.option("--balance", "balance_usd", default=None, type=float, help="Account balance (USD).")
@click.option("--seed", default=None, type=int, help="Seed of the fault generator.")
def fake_server_command(host: str, port: int, **faults: Any) -> None:
    """Run the built-in Ideogram stand-in (both dialects) until interrupted."""
    try:
        config = FaultConfig(**faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    asyncio.run(serve(config, host, port))


async def serve(config: FaultConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with FakeServer(config, host=host, port=port) as server:
            click.echo(LISTENING.format(url=server.url))
            sys.stdout.flush()
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
