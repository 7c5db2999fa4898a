"""What the two original studies report, the one table every figure and the report compare with.

Each entry is the published value (as text, as the papers state it) and, where the papers give
a range of numbers, that range. docs/science.md explains each quantity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Published:
    text: str
    """The published value as the papers state it, with its setting."""
    low: Optional[float] = None
    high: Optional[float] = None
    """The published range, where the papers give numbers."""


PUBLISHED: dict[str, Published] = {
    "error_vector_r2": Published("about 0.5 (Gemma 2, Gemma Scope)"),
    "error_norm_r2": Published("> 0.9", 0.9, 1.0),
    "nonlinear_fvu": Published("about constant with width"),
    "kl_ratio_resid": Published("2 - 4.5 (GPT-2 small)", 2.0, 4.5),
    "kl_ratio_attn_z": Published("0.9 - 1.7 (GPT-2 small)", 0.9, 1.7),
    "pursuit": Published("a few % of the FVU; very little of the nonlinear FVU"),
    "error_saes": Published("the SAE on n is worse than the one on ê"),
    "component_ce": Published("proportional to each component's share"),
    "synthetic": Published("linear error tracks σ_a, nonlinear error tracks σ_r"),
    "earlier_components": Published("earlier SAE outputs explain more of n than pursuit removes"),
}


def published_text(key: str) -> str:
    return PUBLISHED[key].text


def published_range(key: str) -> tuple[float, float]:
    entry = PUBLISHED[key]
    if entry.low is None or entry.high is None:
        raise KeyError(f"{key}: the papers give no numeric range")
    return entry.low, entry.high
