"""A pure tool: currency conversion from a local rates table (no network)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ragpacer.agents.tools import ToolArgumentError

# Units of each currency per 1 EUR; a demo table, replace it through the config.
DEFAULT_RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85, "CHF": 0.95, "JPY": 163.0,
                 "SEK": 11.4, "PLN": 4.3, "CAD": 1.47}
_AMOUNT = re.compile(r"(\d+(?:[.,]\d+)?)\s*([A-Za-z]{3})\b.*?\b(?:to|in|into)\s+([A-Za-z]{3})\b")


class CurrencyConvert:
    name: ClassVar[str] = "currency_convert"
    description: ClassVar[str] = "Convert an amount between currencies at today's rates."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "minimum": 0, "maximum": 1e12},
            "from_currency": {"type": "string", "enum": sorted(DEFAULT_RATES)},
            "to_currency": {"type": "string", "enum": sorted(DEFAULT_RATES)},
        },
        "required": ["amount", "from_currency", "to_currency"],
        "additionalProperties": False,
    }

    def __init__(self, rates: Mapping[str, float] | None = None, timeout_s: float = 0.05):
        self.rates = dict(rates or DEFAULT_RATES)
        self.timeout_s = timeout_s

    async def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        src, dst = args["from_currency"], args["to_currency"]
        value = args["amount"] / self.rates[src] * self.rates[dst]
        return {"amount": args["amount"], "from": src, "to": dst, "result": round(value, 2),
                "rate": round(self.rates[dst] / self.rates[src], 6)}

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        m = _AMOUNT.search(state.get("query", ""))
        if m is None:
            raise ToolArgumentError("no 'AMOUNT CUR to CUR' in the question")
        return {"amount": float(m.group(1).replace(",", ".")),
                "from_currency": m.group(2).upper(), "to_currency": m.group(3).upper()}
