"""What a job costs: each op's prices by tier (from the endpoint catalog), overridable in the manifest.

Prices are USD per output image for the ops billed per image (generate and
remix: Ideogram's published API prices by model) and per call for the ops
billed per input (upscale, describe: estimates to confirm, see ``reference/``
notes, §8). A job costs ``price × num_images`` (or the price, once):
images withheld by the safety filter are billed too.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from pipeline import endpoints


class PriceTable:
    """Prices per op and tier, the catalog's defaults overlaid with the manifest's `prices:`.

    Override keys are ``"<op>"`` (every tier of that op) or ``"<op>.<tier>"``
    (``"generate.V_2": 0.07``); the more specific one wins.
    """

    def __init__(self, overrides: Mapping[str, float | Decimal] | None = None) -> None:
        self._overrides = {k: Decimal(str(v)) for k, v in (overrides or {}).items()}

    def unit_price(self, op: str, tier: str | None) -> Decimal:
        """USD for one billed unit: an output image, or a call."""
        if tier is not None and f"{op}.{tier}" in self._overrides:
            return self._overrides[f"{op}.{tier}"]
        if op in self._overrides:
            return self._overrides[op]
        return endpoints.endpoint(op).unit_price(tier)

    def job_cost(self, op: str, tier: str | None, num_images: int) -> Decimal:
        """Estimated cost of one call: unit price × images asked (once for ops billed per call)."""
        units = max(1, num_images) if endpoints.endpoint(op).per_image else 1
        return self.unit_price(op, tier) * units

    def is_estimate(self, op: str, tier: str | None) -> bool:
        """Whether the price used for ``op`` at ``tier`` is an unconfirmed default."""
        if (tier is not None and f"{op}.{tier}" in self._overrides) or op in self._overrides:
            return False
        return tier in endpoints.endpoint(op).estimated


DEFAULT_PRICES = PriceTable()


def valid_override_key(key: str) -> bool:
    """Whether ``key`` names an op, or an op and one of its tiers, of the catalog."""
    op, _, tier = key.partition(".")
    if op not in endpoints.ops():
        return False
    return not tier or tier in endpoints.endpoint(op).prices
