"""Token prices for cost estimates (USD per 1M tokens), overridable by the user.

Override with ``--prices FILE`` or ``$CONDSIM_LLM_PRICES`` (TOML or JSON)::

    # prices.toml                           # prices.json
    ["gpt-4.1-mini"]                        {"gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    input = 0.40                             "my-vllm-model": {"input": 0, "output": 0}}
    output = 1.60

A model is matched exactly, then by the longest known prefix (so dated snapshots
such as ``gpt-4.1-mini-2025-04-14`` find their family).  Models served from a
local address (127.0.0.1, localhost) cost 0 unless priced; anything else unknown
has no cost estimate (reported as "unknown"), never a guess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import tomllib

from ..errors import InputError

ENV_PRICES = "CONDSIM_LLM_PRICES"

# Public list prices (standard tier) per 1M tokens: (input, output).  Check your provider's page.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def load_prices(path: str | None = None) -> dict[str, tuple[float, float]]:
    """Default prices updated from ``path`` (or ``$CONDSIM_LLM_PRICES``)."""
    prices = dict(DEFAULT_PRICES)
    path = path or os.environ.get(ENV_PRICES)
    if not path:
        return prices
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("price file not found", file=str(p))
    raw = p.read_text(encoding="utf-8")
    try:
        data = json.loads(raw) if p.suffix.lower() == ".json" else tomllib.loads(raw)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read prices: {exc}", file=str(p)) from None
    if isinstance(data.get("models"), dict):
        data = data["models"]
    for model, v in data.items():
        if not isinstance(v, dict) or not all(isinstance(v.get(k), (int, float)) for k in ("input", "output")):
            raise InputError("each model needs numeric 'input' and 'output' (USD per 1M tokens)", file=str(p),
                             field=model)
        prices[model] = (float(v["input"]), float(v["output"]))
    return prices


def price_for(model: str, prices: dict[str, tuple[float, float]], base_url: str | None = None) -> tuple[float,
                                                                                                        float] | None:
    if model in prices:
        return prices[model]
    best = max((m for m in prices if model.startswith(m)), key=len, default=None)
    if best is not None:
        return prices[best]
    if base_url and (urlparse(base_url).hostname or "") in LOCAL_HOSTS:
        return (0.0, 0.0)
    return None


def estimate_cost(model: str, tokens_in: int, tokens_out: int, prices: dict[str, tuple[float, float]],
                  base_url: str | None = None) -> float | None:
    """USD, or None when the model has no known price."""
    pr = price_for(model, prices, base_url)
    if pr is None:
        return None
    return (tokens_in * pr[0] + tokens_out * pr[1]) / 1_000_000
