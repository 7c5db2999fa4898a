"""A pluggable automated-interpretability judge for SAE latents (the optional step of docs/science.md, "SAEs trained on the error components").

The published study asked a 70B LLM to explain each latent from its top-activating contexts and
scored the explanations. No such model runs here, so the pipeline only defines the interface
and the plumbing: `error_saes.judge` names a factory "package.module:attribute" returning an
object with `score(examples) -> float` in [0, 1]; the stage collects each latent's
top-activating test contexts and records the judge's mean score per error SAE. Off by default;
tested with a stub judge (tests/test_judge.py), not with a real LLM.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from pipeline.config import ConfigError


@dataclass
class LatentExamples:
    latent: int
    contexts: list[str]
    """Text windows around the top-activating tokens; the token itself is wrapped in << >>."""
    activations: list[float]


class Judge(Protocol):
    def score(self, examples: LatentExamples) -> float:
        """How interpretable the latent is, from 0 (no pattern) to 1 (one clear concept)."""
        ...


def load_judge(spec: str) -> Judge:
    """Import "package.module:attribute" and call it (a class or a factory) to get the judge."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"error_saes.judge: expected 'package.module:attribute', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"error_saes.judge: cannot load {spec!r}: {exc}") from None
    return factory()


def top_examples(
    latents: np.ndarray, row_context: np.ndarray, row_position: np.ndarray, contexts: np.ndarray,
    decode: Callable[[list[int]], str], n_latents: int, n_examples: int, window: int = 8,
) -> list[LatentExamples]:
    """For the `n_latents` most often active latents of `latents` (rows x d_sae, the rows' token
    locations in `row_context`/`row_position`), their `n_examples` top-activating contexts."""
    order = np.argsort(-(latents > 0).sum(0), kind="stable")[:n_latents]
    out = []
    for latent in order:
        top = np.argsort(-latents[:, latent], kind="stable")[:n_examples]
        top = top[latents[top, latent] > 0]
        texts = []
        for row in top:
            tokens, p = contexts[row_context[row]], row_position[row]
            texts.append(decode(tokens[max(0, p - window) : p].tolist()) + "<<" + decode([int(tokens[p])]) + ">>")
        out.append(LatentExamples(int(latent), texts, latents[top, latent].tolist()))
    return out
