"""The fake server's memory: request log, billing, balance, images in flight, randomness.

Everything a test wants to count lives here: how many calls were billed, how
many of them repeated an already-billed request (`duplicate_billed`, the cost of
a runner that pays twice), the most images ever in flight. One
``random.Random(config.seed)`` drives every fault decision, so a seeded run
replays the same faults for the same sequence of calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from email.utils import formatdate
from typing import Any

from aiohttp import web

from pipeline.fake_server.config import DEFAULT_REPORTED_INFLIGHT_LIMIT, FaultConfig
from pipeline.fake_server.urls import UrlSigner

#: status logged for a call whose connection was closed without any response
NO_RESPONSE = 0
#: a split write's first piece is at most this long; each next piece's cap doubles
FIRST_PIECE_MAX = 4
MAX_PIECE = 64 * 1024
_RETRY_AFTER_ROTATION = ("seconds", "date", "none")
_MAX_SEED = 2**31


@dataclass(frozen=True)
class LogEntry:
    """One API call as the server saw it."""

    time: float
    dialect: str
    op: str
    status: int
    billed: bool
    cost: Decimal
    num_images: int
    #: sha256 of op, canonical image_request and source bytes; None if the body did not parse
    request_hash: str | None
    #: the injected fault that decided the answer (``rate_429``, ``reset``, ...), or None
    fault: str | None
    #: the error message sent, if any
    message: str | None = None
    #: the path called
    path: str = ""
    #: ``json`` or ``multipart``; None if the body did not parse
    encoding: str | None = None
    #: the request's fields as the server read them (None if the body did not parse)
    fields: dict[str, Any] | None = None
    #: the body's part names (multipart, repeated parts repeated) or keys (JSON), in order
    parts: tuple[str, ...] = ()
    #: the sha256 of each file received, by part name, in order
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict."""
        data = asdict(self)
        data["cost"] = float(self.cost)
        return data


Predicate = Callable[["ServerState"], bool]


class ServerState:
    """Mutable state shared by every handler of one fake server."""

    def __init__(self, config: FaultConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        #: the wall clock (tests may replace it); `now()` adds `config.clock_offset_s`
        self.clock = clock
        self.signer = UrlSigner()
        self.log: list[LogEntry] = []
        self.inflight_images = 0
        self._waiters: list[tuple[Predicate, asyncio.Future[None]]] = []
        self._gate = asyncio.Event()
        self._gate.set()
        self.reset()

    # -- configuration ---------------------------------------------------------------

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change the config at runtime (ValueError if a value is bad); return the new one."""
        self.config = self.config.updated(changes)
        if "balance_usd" in changes:
            self._balance = _money(self.config.balance_usd)
        if "seed" in changes:
            self._rng = random.Random(self.config.seed)
        return self.config

    def reset(self) -> None:
        """Forget the log, counters and spend; restore the configured balance and seed."""
        self.log = []
        self._rng = random.Random(self.config.seed)
        self._balance = _money(self.config.balance_usd)
        self._reserved = Decimal(0)
        self._billed = 0
        self._billed_usd = Decimal(0)
        self._billed_hashes: set[str] = set()
        self._duplicate_billed = 0
        self._by_status: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self.max_inflight_images = self.inflight_images
        self.downloads = 0
        self.downloads_served = 0
        self._retry_after_turn = 0
        self._notify()

    def now(self) -> float:
        """The server's idea of the current unix time."""
        return self.clock() + self.config.clock_offset_s

    # -- randomness ------------------------------------------------------------------

    def chance(self, rate: float) -> bool:
        """Whether a fault of this rate fires now (never draws for a zero rate)."""
        return rate > 0 and self._rng.random() < rate

    def choice(self, options: tuple[int, ...]) -> int:
        """One of ``options``, drawn from the seeded generator."""
        return options[self._rng.randrange(len(options))]

    def random_seed(self) -> int:
        """An image seed for a request that gave none."""
        return self._rng.randrange(_MAX_SEED)

    def piece_sizes(self, length: int) -> list[int]:
        """Random sizes that cut ``length`` bytes into pieces for a split write.

        The first piece is at most `FIRST_PIECE_MAX` bytes and each next cap
        doubles (up to `MAX_PIECE`): a reader that judges a body by its first
        read sees a few bytes, and a large body takes few pieces.
        """
        sizes: list[int] = []
        cap = FIRST_PIECE_MAX
        left = length
        while left > 0:
            size = min(left, self._rng.randint(1, cap))
            sizes.append(size)
            left -= size
            cap = min(cap * 2, MAX_PIECE)
        return sizes

    def nonce(self) -> bytes:
        """Bytes that make each image URL unique."""
        return self._rng.randbytes(7)

    def latency_s(self) -> float:
        """How long this call takes, per the configured distribution."""
        cfg = self.config
        if cfg.latency_ms <= 0 and cfg.latency_jitter_ms <= 0:
            return 0.0
        if cfg.latency_dist == "exponential":
            return self._rng.expovariate(1.0 / cfg.latency_ms) / 1000 if cfg.latency_ms else 0.0
        if cfg.latency_dist == "uniform" and cfg.latency_jitter_ms:
            jitter = self._rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
            return max(0.0, cfg.latency_ms + jitter) / 1000
        return cfg.latency_ms / 1000

    def retry_after(self) -> str | None:
        """The Retry-After header value of a 429, per `retry_after` mode (None: no header)."""
        mode: str = self.config.retry_after
        if mode == "mixed":
            mode = _RETRY_AFTER_ROTATION[self._retry_after_turn % len(_RETRY_AFTER_ROTATION)]
            self._retry_after_turn += 1
        if mode == "seconds":
            return str(self.config.retry_after_s)
        if mode == "date":
            return formatdate(self.now() + self.config.retry_after_s, usegmt=True)
        return None

    @property
    def reported_inflight_limit(self) -> int:
        """The limit a 429 names: the configured one, else Ideogram's default."""
        return self.config.inflight_limit or DEFAULT_REPORTED_INFLIGHT_LIMIT

    # -- admission, in-flight images and money ---------------------------------------

    def over_inflight_limit(self, images: int) -> bool:
        """Whether admitting ``images`` more would pass the in-flight limit."""
        limit = self.config.inflight_limit
        return bool(limit) and self.inflight_images + images > limit

    def reserve(self, cost: Decimal) -> bool:
        """Hold ``cost`` of the balance for a call about to run; False if it cannot be covered."""
        if self._balance is not None and self._balance - self._reserved < cost:
            return False
        self._reserved += cost
        return True

    def settle(self, cost: Decimal, request_hash: str | None, *, billed: bool) -> None:
        """Release a reservation, charging it when the call is billed."""
        self._reserved -= cost
        if not billed:
            return
        self._billed += 1
        self._billed_usd += cost
        if self._balance is not None:
            self._balance -= cost
        if request_hash is not None:
            if request_hash in self._billed_hashes:
                self._duplicate_billed += 1
            self._billed_hashes.add(request_hash)

    @contextmanager
    def in_flight(self, images: int) -> Iterator[None]:
        """Count ``images`` as in flight for the duration of the block."""
        self.inflight_images += images
        self.max_inflight_images = max(self.max_inflight_images, self.inflight_images)
        self._notify()
        try:
            yield
        finally:
            self.inflight_images -= images
            self._notify()

    # -- holding calls in flight (tests) ---------------------------------------------

    def hold(self) -> None:
        """Make calls wait, in flight, after their latency until `release()`."""
        self._gate.clear()

    def release(self) -> None:
        """Let held calls finish."""
        self._gate.set()

    async def pass_gate(self) -> None:
        """Wait here while calls are held."""
        if not self._gate.is_set():
            await self._gate.wait()

    # -- records ---------------------------------------------------------------------

    def record(self, entry: LogEntry) -> None:
        """Append a call to the log."""
        self.log.append(entry)
        self._by_status[str(entry.status)] += 1
        if entry.fault:
            self._faults[entry.fault] += 1
        self._notify()

    def record_download(self, *, served: bool, fault: str | None = None) -> None:
        """Count a GET of an image URL."""
        self.downloads += 1
        self.downloads_served += served
        if fault:
            self._faults[fault] += 1
        self._notify()

    def count_fault(self, fault: str) -> None:
        """Count a fault applied outside a call's own log entry (a response split or trickled)."""
        self._faults[fault] += 1

    def stats(self) -> dict[str, Any]:
        """Counters for tests and ``GET /_stats``."""
        return {
            "requests": len(self.log),
            "billed": self._billed,
            "billed_usd": float(self._billed_usd),
            "by_status": dict(self._by_status),
            "duplicate_billed": self._duplicate_billed,
            "max_inflight_images": self.max_inflight_images,
            "inflight_images": self.inflight_images,
            "downloads": self.downloads,
            "downloads_served": self.downloads_served,
            "balance_usd": None if self._balance is None else float(self._balance),
            "faults": dict(self._faults),
        }

    async def wait_until(self, predicate: Predicate, timeout_s: float = 5.0) -> None:
        """Wait until ``predicate(state)`` holds (checked after every change); TimeoutError."""
        if predicate(self):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (predicate, waiter)
        self._waiters.append(item)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        finally:
            self._waiters.remove(item)

    def _notify(self) -> None:
        for predicate, waiter in self._waiters:
            if not waiter.done() and predicate(self):
                waiter.set_result(None)


STATE: web.AppKey[ServerState] = web.AppKey("fake_server_state", ServerState)


def _money(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))
