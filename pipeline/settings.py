"""What executing a manifest's jobs needs, as stored in the ledger at plan time.

A worker on another machine has no manifest file: planning stores these
settings (provider, base URL, the *name* of the key variable — never the key —
output folder and template, limits, retry, timeouts, prices, defaults and the
`then:` stages) in the ledger, and every run executes from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import UsageError
from pipeline.manifest import (
    LimitsConfig,
    LoadedManifest,
    ProviderConfig,
    RetryConfig,
    StageSpec,
    TimeoutsConfig,
)
from pipeline.pricing import PriceTable


@dataclass(frozen=True)
class RunSettings:
    """How to execute one planned manifest's jobs."""

    name: str
    base_dir: str
    provider: ProviderConfig
    output_dir: str
    name_template: str
    limits: LimitsConfig
    retry: RetryConfig
    timeouts: TimeoutsConfig
    prices: dict[str, float]
    defaults: dict[str, Any]
    jobs: list[StageSpec]

    @classmethod
    def from_manifest(cls, loaded: LoadedManifest) -> RunSettings:
        """Settings of a freshly loaded manifest."""
        m = loaded.manifest
        return cls(
            name=m.name,
            base_dir=str(loaded.base_dir),
            provider=m.provider,
            output_dir=str(loaded.output_dir),
            name_template=m.output.name,
            limits=m.limits,
            retry=m.retry,
            timeouts=m.timeouts,
            prices=dict(m.prices),
            defaults=dict(m.defaults),
            jobs=[_stage_only(j) for j in m.jobs],
        )

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict for the ledger."""
        return {
            "name": self.name,
            "base_dir": self.base_dir,
            "provider": self.provider.model_dump(mode="json"),
            "output": {"dir": self.output_dir, "name": self.name_template},
            "limits": self.limits.model_dump(mode="json"),
            "retry": self.retry.model_dump(mode="json"),
            "timeouts": self.timeouts.model_dump(mode="json"),
            "prices": self.prices,
            "defaults": self.defaults,
            "jobs": [j.model_dump(mode="json", exclude_none=True) for j in self.jobs],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RunSettings:
        """Settings as stored in the ledger."""
        return cls(
            name=config["name"],
            base_dir=config["base_dir"],
            provider=ProviderConfig.model_validate(config["provider"]),
            output_dir=config["output"]["dir"],
            name_template=config["output"]["name"],
            limits=LimitsConfig.model_validate(config["limits"]),
            retry=RetryConfig.model_validate(config["retry"]),
            timeouts=TimeoutsConfig.model_validate(config["timeouts"]),
            prices=dict(config.get("prices", {})),
            defaults=dict(config.get("defaults", {})),
            jobs=[StageSpec.model_validate(j) for j in config.get("jobs", [])],
        )

    def with_overrides(
        self,
        *,
        concurrency: int | None = None,
        budget_usd: float | None = None,
        out_dir: str | None = None,
        base_url: str | None = None,
    ) -> RunSettings:
        """These settings with command-line overrides applied."""
        limits = self.limits
        if concurrency is not None:
            limits = limits.model_copy(update={"concurrency": concurrency})
        if budget_usd is not None:
            limits = limits.model_copy(update={"budget_usd": budget_usd})
        provider = self.provider
        if base_url is not None:
            provider = ProviderConfig.model_validate({**provider.model_dump(), "base_url": base_url})
        return replace(
            self,
            limits=limits,
            provider=provider,
            output_dir=os.path.abspath(out_dir) if out_dir else self.output_dir,
        )

    @property
    def price_table(self) -> PriceTable:
        """Prices with the manifest's overrides."""
        return PriceTable(self.prices)

    def api_key(self) -> str:
        """The API key from the environment variable the manifest names; `UsageError` if unset."""
        name = self.provider.key_env
        value = os.environ.get(name, "").strip()
        if not value:
            raise UsageError(
                f"{self.name}: the API key variable {name} is not set "
                f"(export {name}=... or set provider.api_key_env in the manifest)"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            # a header cannot carry it (aiohttp refuses it mid-run, after the attempt is recorded)
            raise UsageError(
                f"{self.name}: the API key in {name} holds a control character (a line break or a "
                "tab?): set it to the key alone"
            )
        return value


def _stage_only(spec: StageSpec) -> StageSpec:
    """A job spec without its sources (prompts files and images are expanded already)."""
    data = spec.model_dump(exclude_none=True)
    for key in ("prompts", "images", "id", "ignore_columns"):
        data.pop(key, None)
    return StageSpec.model_validate(data)
