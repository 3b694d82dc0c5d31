"""What the fake server does wrong on purpose: latency, rate limits, failures, money.

One `FaultConfig` holds every knob. It is set by the constructor, by
``FakeServer.set_faults(**kw)``, by the ``fake-server`` command's flags and at
runtime by ``POST /_control`` with a partial JSON object; every route goes
through `FaultConfig.updated`, so a bad value is rejected the same way
everywhere. Rates are shares of calls in [0, 1]; a rate of 1.0 makes a fault
fire on every call, which is how the tests provoke them deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_API_KEY = "fake-key"
DEFAULT_URL_TTL_S = 86_400.0
DEFAULT_RETRY_AFTER_S = 1
#: Ideogram's default account limit, reported in a 429 when no limit is configured
DEFAULT_REPORTED_INFLIGHT_LIMIT = 10
#: reported resolutions are divided by this to get the size of the PNG served
DEFAULT_IMAGE_SCALE = 16

Rate = float
LatencyDist = Literal["fixed", "uniform", "exponential"]
RetryAfterMode = Literal["seconds", "date", "none", "mixed"]


class FaultConfig(BaseModel):
    """Every behaviour of the fake server that a test or benchmark may want to change."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: the one key accepted (`Api-Key: KEY` native, `Authorization: Bearer KEY` proxy)
    api_key: str = DEFAULT_API_KEY
    #: seed of the random generator behind every fault decision and unseeded image seed
    seed: int | None = None

    #: time an API call takes; `uniform` spreads it ± `latency_jitter_ms`,
    #: `exponential` draws it with mean `latency_ms`, `fixed` ignores the jitter
    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    latency_dist: LatencyDist = "uniform"
    #: time an image download takes before the first byte
    download_latency_ms: float = Field(default=0.0, ge=0)

    #: share of calls answered 429 `inflight_limit` whatever the load
    rate_429: Rate = Field(default=0.0, ge=0, le=1)
    #: how 429 answers carry Retry-After; `mixed` rotates seconds, date, none
    retry_after: RetryAfterMode = "seconds"
    retry_after_s: int = Field(default=DEFAULT_RETRY_AFTER_S, ge=0)
    #: images allowed in flight at once (0: no limit); a call that would pass it gets 429
    inflight_limit: int = Field(default=0, ge=0)

    #: share of calls that do the work, are not billed, and answer 500/502/503 in HTML
    rate_5xx: Rate = Field(default=0.0, ge=0, le=1)
    #: share of calls that are done and billed, then the connection is reset unanswered
    rate_reset: Rate = Field(default=0.0, ge=0, le=1)
    #: share of calls done and billed whose response body is cut short
    rate_truncate: Rate = Field(default=0.0, ge=0, le=1)

    #: a prompt containing this word (any case) is refused with 422, not billed
    unsafe_word: str | None = None
    #: a prompt containing this word gets 200 with its images withheld, billed
    withheld_word: str | None = None

    #: account balance in USD (None: unlimited); a call it cannot cover is refused
    balance_usd: float | None = Field(default=None, ge=0)

    #: faults of image downloads (shares of GETs of image URLs)
    rate_download_truncate: Rate = Field(default=0.0, ge=0, le=1)
    rate_download_html: Rate = Field(default=0.0, ge=0, le=1)
    rate_download_reset: Rate = Field(default=0.0, ge=0, le=1)
    #: descriptions per described image: None lets the image decide (one or two, like Ideogram)
    descriptions_per_image: int | None = Field(default=None, ge=1, le=4)
    #: share of image GETs answered with a tiny PNG whose header claims 12000x12000 pixels
    rate_download_bomb: Rate = Field(default=0.0, ge=0, le=1)
    #: a misbehaving proxy: 5xx pages quote the request's auth header back (secrets tests)
    echo_auth_in_errors: bool = False
    #: filler characters before that quote, to move the key across a client's message cut
    error_padding: int = Field(default=0, ge=0, le=1_000_000)
    #: appended to every returned prompt, description and error message: hostile text such
    #: as NULs and lone surrogates (JSON-escaped on the wire as `\u0000`, `\ud800`)
    response_text_suffix: str = ""
    #: when > 0, image URLs serve the PNG signature and this many bytes of garbage
    download_oversize_bytes: int = Field(default=0, ge=0)
    #: when set, valid image URLs answer 302 with this Location (a CDN that moved the image)
    download_redirect_url: str | None = None

    #: share of responses (API answers, errors, image URLs, sample sources) written in pieces
    #: cut at random byte boundaries — headers too — each flushed on its own after a pause
    split_writes: Rate = Field(default=0.0, ge=0, le=1)
    #: when > 0, response bodies are sent at this many bytes per second
    trickle_bps: int = Field(default=0, ge=0)

    #: lifetime of image URLs
    url_ttl_s: float = Field(default=DEFAULT_URL_TTL_S, ge=0)
    #: added to the server's clock (created, URL expiry): move time on without sleeping
    clock_offset_s: float = 0.0
    #: reported resolution / this = size of the PNG actually served
    image_scale: int = Field(default=DEFAULT_IMAGE_SCALE, ge=1, le=64)
    #: how long the proxy waits for an `image_file` URL it must fetch
    fetch_timeout_s: float = Field(default=10.0, gt=0)

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied, validated like the constructor (ValueError if bad)."""
        return FaultConfig.model_validate({**self.model_dump(), **dict(changes)})

    def as_json(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (what ``GET /_control`` returns)."""
        return self.model_dump(mode="json")
