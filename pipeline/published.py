"""What the two original studies report, the one table every figure and the report compare with.

Each entry is the published value (as text, as the papers state it) and, where the papers give
a range of numbers, that range. docs/science.md explains each quantity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Published:
    text: str
    """The published value as the papers state it, with its setting."""
    low: Optional[float] = None
    high: Optional[float] = None
    """The published range, where the papers give numbers."""


# Gurnee's numbers, for tables that set them beside this run's (and the text of PUBLISHED["gurnee_gpt2_layer6"]).
GURNEE_GPT2_LAYER6 = {"kl_sae": 0.1542, "kl_epsilon_random": 0.0611, "kl_ratio": 2.52, "ce_clean": 3.5695, "ce_spliced": 3.7060}

PUBLISHED: dict[str, Published] = {
    "error_vector_r2": Published("about 0.5 (Gemma 2, Gemma Scope)"),
    "error_norm_r2": Published("> 0.9", 0.9, 1.0),
    "nonlinear_fvu": Published("about constant with width"),
    "kl_ratio_resid": Published("2 - 4.5 (GPT-2 small)", 2.0, 4.5),
    "kl_ratio_attn_z": Published("0.9 - 1.7 (GPT-2 small)", 0.9, 1.7),
    "gurnee_gpt2_layer6": Published(
        "GPT-2 small, layer 6 residual stream, gpt2-small-res-jb SAE (Gurnee): KL {kl_sae:.4f} for the spliced SAE against "
        "{kl_epsilon_random:.4f} for ε-random, a ratio of {kl_ratio:.2f}x; CE {ce_clean:.4f} clean against {ce_spliced:.4f} spliced"
        .format(**GURNEE_GPT2_LAYER6)),
    "pursuit": Published("a few % of the FVU; very little of the nonlinear FVU"),
    "error_saes": Published("the SAE on n is worse than the one on ê"),
    "component_ce": Published("proportional to each component's share"),
    "synthetic": Published("linear error tracks σ_a, nonlinear error tracks σ_r"),
    "earlier_components": Published("earlier SAE outputs explain more of n than pursuit removes"),
    # The claims that pipeline/claims.py tests. Where a paper states a claim in words, the range is this
    # project's reading of those words, and the text says so.
    "claim_error_vector_r2": Published(
        "about half of the error vector is linear, R² ≈ 0.5 (Engels et al.: Gemma 2, Gemma Scope residual SAEs); "
        "'about' read as 0.4 - 0.6", 0.4, 0.6),
    "claim_error_norm_r2": Published(
        "> 90% of the error norm is linearly predictable, R² > 0.9 (Engels et al.: Gemma 2, Gemma Scope)", 0.9, 1.0),
    "claim_nonlinear_fvu_flat": Published(
        "the nonlinear FVU is about constant as the width grows (Engels et al.: Gemma Scope, 16k - 1M latents); "
        "read as every width's within ±10% of the narrowest's", 0.9, 1.1),
    "claim_per_token_scaling": Published(
        "a token's error norm at a small width predicts it at a larger one, 'remarkably predictable' "
        "(Engels et al.: Gemma 2, Gemma Scope); read as R² ≥ 0.8", 0.8, 1.0),
    "claim_component_ce": Published(
        "n costs a share of the CE increase proportional to its share of the error (Engels et al.: Gemma 2, "
        "Gemma Scope); read as its % CE recovered ÷ % variance restored in 0.8 - 1.25", 0.8, 1.25),
    "claim_error_saes": Published(
        "an SAE trained on n is quantitatively worse than one trained on ê, same width and L0 (Engels et al.: "
        "Gemma 2); FVU ratio n / ê > 1", 1.0, math.inf),
    "claim_pursuit": Published(
        "gradient pursuit gives a very slight decrease, a few % of the FVU (Engels et al.: Gemma 2, Gemma Scope); "
        "read as pursuit FVU ÷ encoder FVU in 0.9 - 1", 0.9, 1.0),
    "claim_earlier_vs_pursuit": Published(
        "linear maps from earlier SAE outputs reduce n more than gradient pursuit does (Engels et al.: Gemma 2); "
        "ratio > 1", 1.0, math.inf),
    "claim_cov_narrows_gap": Published(
        "a covariance-shaped random baseline is a stronger baseline than an isotropic one, narrowing the gap "
        "(Lee & Heimersheim, arXiv 2410.12555); ratio vs cov_random ÷ ratio vs epsilon_random < 1", 0.0, 1.0),
}


def published_text(key: str) -> str:
    return PUBLISHED[key].text


def published_range(key: str) -> tuple[float, float]:
    entry = PUBLISHED[key]
    if entry.low is None or entry.high is None:
        raise KeyError(f"{key}: the papers give no numeric range")
    return entry.low, entry.high
