"""FaultConfig validation and the state's randomness, money and Retry-After logic."""

from __future__ import annotations

from decimal import Decimal
from email.utils import parsedate_to_datetime

import pytest

from pipeline.fake_server import FaultConfig, ServerState
from pipeline.fake_server.state import FIRST_PIECE_MAX, MAX_PIECE


def test_config_rejects_bad_values_and_unknown_fields() -> None:
    """Rates above 1, unknown fields and unknown modes are refused."""
    with pytest.raises(ValueError, match="rate_429"):
        FaultConfig(rate_429=1.5)
    with pytest.raises(ValueError, match="extra"):
        FaultConfig().updated({"rate_428": 0.1})
    with pytest.raises(ValueError, match="latency_dist"):
        FaultConfig().updated({"latency_dist": "gaussian"})


def test_updated_keeps_other_fields() -> None:
    """A partial update changes only the named fields."""
    config = FaultConfig(api_key="k", rate_5xx=0.5).updated({"rate_429": 0.25})
    assert (config.api_key, config.rate_5xx, config.rate_429) == ("k", 0.5, 0.25)
    assert config.as_json()["rate_429"] == 0.25


def test_seeded_state_replays_fault_decisions() -> None:
    """Two states with the same seed draw the same fault sequence; reset replays it."""
    one = ServerState(FaultConfig(seed=3))
    two = ServerState(FaultConfig(seed=3))
    first = [one.chance(0.5) for _ in range(50)]
    assert first == [two.chance(0.5) for _ in range(50)]
    one.reset()
    assert first == [one.chance(0.5) for _ in range(50)]
    assert not any(one.chance(0.0) for _ in range(50))
    assert all(one.chance(1.0) for _ in range(50))


@pytest.mark.parametrize(
    ("dist", "low", "high"),
    [("fixed", 0.1, 0.1), ("uniform", 0.08, 0.12), ("exponential", 0.0, 10.0)],
)
def test_latency_follows_its_distribution(dist: str, low: float, high: float) -> None:
    """Latency stays within the bounds of its distribution."""
    config = FaultConfig(seed=1, latency_ms=100, latency_jitter_ms=20).updated({"latency_dist": dist})
    state = ServerState(config)
    draws = [state.latency_s() for _ in range(200)]
    assert all(low <= d <= high for d in draws)
    if dist != "fixed":
        assert len(set(draws)) > 100


def test_retry_after_modes() -> None:
    """Seconds, HTTP date, none, and mixed rotating through the three."""
    state = ServerState(FaultConfig(retry_after_s=7), clock=lambda: 1_000_000.0)
    assert state.retry_after() == "7"
    state.set_faults(retry_after="date")
    value = state.retry_after()
    assert value is not None
    assert parsedate_to_datetime(value).timestamp() == 1_000_007
    state.set_faults(retry_after="none")
    assert state.retry_after() is None
    state.set_faults(retry_after="mixed")
    mixed = [state.retry_after() for _ in range(6)]
    assert mixed[0] == "7"
    assert mixed[1] is not None
    assert mixed[1].endswith("GMT")
    assert mixed[2] is None
    assert mixed[3:] == mixed[:3]


def test_balance_reservations_and_duplicate_billing() -> None:
    """A reservation holds money; settling bills it; a repeated hash counts as duplicate."""
    state = ServerState(FaultConfig(balance_usd=0.1))
    assert state.reserve(Decimal("0.08"))
    assert not state.reserve(Decimal("0.08"))  # 0.02 left unreserved
    state.settle(Decimal("0.08"), "h1", billed=True)
    assert state.stats()["balance_usd"] == pytest.approx(0.02)
    assert state.reserve(Decimal("0.02"))
    state.settle(Decimal("0.02"), "h1", billed=True)
    stats = state.stats()
    assert (stats["billed"], stats["duplicate_billed"]) == (2, 1)
    assert stats["balance_usd"] == pytest.approx(0.0)
    state.set_faults(balance_usd=1.0)
    assert state.stats()["balance_usd"] == 1.0
    state.reset()
    assert state.stats()["billed"] == 0


def test_split_pieces_start_small_and_cover_the_bytes() -> None:
    """A split write's pieces add up to the whole, the first at most 4 bytes, each cap doubling; seeded."""
    state = ServerState(FaultConfig(seed=8))
    for length in (1, 3, 319, 5000, 400_000):
        sizes = state.piece_sizes(length)
        assert sum(sizes) == length
        assert all(size >= 1 for size in sizes)
        assert sizes[0] <= FIRST_PIECE_MAX
        assert all(size <= min(FIRST_PIECE_MAX * 2**i, MAX_PIECE) for i, size in enumerate(sizes))
    assert len(state.piece_sizes(400_000)) < 40
    assert ServerState(FaultConfig(seed=8)).piece_sizes(5000) == ServerState(FaultConfig(seed=8)).piece_sizes(
        5000
    )


def test_split_and_trickle_settings_are_validated() -> None:
    """split_writes is a rate in [0, 1]; trickle_bps a number of bytes per second, 0 for off."""
    config = FaultConfig(split_writes=0.25, trickle_bps=500)
    assert (config.split_writes, config.trickle_bps) == (0.25, 500)
    with pytest.raises(ValueError, match="split_writes"):
        FaultConfig(split_writes=1.01)
    with pytest.raises(ValueError, match="trickle_bps"):
        FaultConfig().updated({"trickle_bps": -5})
