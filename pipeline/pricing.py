"""What a job costs: a price table per (op, model), overridable in the manifest.

Prices are USD per output image for generate and remix (Ideogram's published
API prices), and per call for upscale and describe, where Ideogram bills per
input image; both are estimates to confirm (see ``reference/`` notes, §8).
A job costs ``price × num_images``: images withheld by the safety filter are
billed too.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from pipeline.api_schema import DEFAULT_MODEL

#: USD per generated image, by model, for generate and remix.
IMAGE_PRICES_USD: Mapping[str, Decimal] = {
    "V_1": Decimal("0.06"),
    "V_1_TURBO": Decimal("0.02"),
    "V_2": Decimal("0.08"),
    "V_2_TURBO": Decimal("0.05"),
    "V_2A": Decimal("0.04"),
    "V_2A_TURBO": Decimal("0.025"),
    "V_3": Decimal("0.06"),
    # AUTO lets Ideogram pick; price it as the dearest model so a budget holds.
    "AUTO": Decimal("0.08"),
}
UPSCALE_PRICE_USD = Decimal("0.06")
DESCRIBE_PRICE_USD = Decimal("0.01")


class PriceTable:
    """Prices per op and model, the defaults overlaid with the manifest's `prices:`.

    Override keys are ``"<op>"`` (every model of that op) or ``"<op>.<model>"``
    (``"generate.V_2": 0.07``); the more specific one wins.
    """

    def __init__(self, overrides: Mapping[str, float | Decimal] | None = None) -> None:
        self._overrides = {k: Decimal(str(v)) for k, v in (overrides or {}).items()}

    def unit_price(self, op: str, model: str | None) -> Decimal:
        """USD for one output image (generate/remix) or one call unit (upscale/describe)."""
        if model is not None and f"{op}.{model}" in self._overrides:
            return self._overrides[f"{op}.{model}"]
        if op in self._overrides:
            return self._overrides[op]
        if op == "upscale":
            return UPSCALE_PRICE_USD
        if op == "describe":
            return DESCRIBE_PRICE_USD
        return IMAGE_PRICES_USD[model or DEFAULT_MODEL]

    def job_cost(self, op: str, model: str | None, num_images: int) -> Decimal:
        """Estimated cost of one call: unit price × images asked (describe: one unit)."""
        units = 1 if op == "describe" else max(1, num_images)
        return self.unit_price(op, model) * units


DEFAULT_PRICES = PriceTable()


def valid_override_key(key: str) -> bool:
    """Whether ``key`` names an op, or an op and a known model, of the price table."""
    op, _, model = key.partition(".")
    if op not in ("generate", "remix", "upscale", "describe"):
        return False
    return not model or model in IMAGE_PRICES_USD
