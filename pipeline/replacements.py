"""The replacements of the pathological-error experiments (the table in docs/science.md, "Pathological errors"), on rows of activations.

Each takes the clean activations x (N, d), the SAE reconstruction x_hat (N, d) and returns
the (N, d) replacement. Random ones draw from a torch.Generator, so a seeded run repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INTERVENTIONS = (
    "substitution",
    "norm_corrected",
    "sae_norm",
    "epsilon_random",
    "theta_random_sae_norm",
    "theta_random_true_norm",
    "cov_random",
    "zero",
    "mean",
)


@dataclass
class ActivationStats:
    """Train-split statistics a replacement may need: the mean and a covariance factor L (L L' = Sigma)."""

    mean: torch.Tensor
    cov_factor: torch.Tensor


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _random_direction(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(like.device, like.dtype)


def epsilon_random(x: torch.Tensor, x_hat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x moved by exactly ||x - x_hat|| in an isotropic random direction."""
    g = _random_direction(x.shape, x, generator)
    return x + (x - x_hat).norm(dim=-1, keepdim=True) * _unit(g)


def cov_random(x: torch.Tensor, x_hat: torch.Tensor, stats: ActivationStats, generator: torch.Generator) -> torch.Tensor:
    """As epsilon_random, but the direction is drawn from N(0, Sigma) (Lee & Heimersheim)."""
    g = _random_direction(x.shape, x, generator) @ stats.cov_factor.T.to(device=x.device, dtype=x.dtype)
    return x + (x - x_hat).norm(dim=-1, keepdim=True) * _unit(g)


def theta_random(x: torch.Tensor, x_hat: torch.Tensor, generator: torch.Generator, norm: torch.Tensor) -> torch.Tensor:
    """A vector at the same angle to x as x_hat, rotated randomly in x's orthogonal complement, of length `norm` (N, 1)."""
    u = _unit(x)
    cos = (_unit(x_hat) * u).sum(-1, keepdim=True).clamp(-1, 1)
    g = _random_direction(x.shape, x, generator)
    v = _unit(g - (g * u).sum(-1, keepdim=True) * u)
    return (cos * u + (1 - cos**2).clamp_min(0).sqrt() * v) * norm


def replacement(name: str, x: torch.Tensor, x_hat: torch.Tensor, stats: ActivationStats, generator: torch.Generator) -> torch.Tensor:
    """The replacement `name` (one of INTERVENTIONS) for rows x with reconstructions x_hat."""
    x_norm, x_hat_norm = x.norm(dim=-1, keepdim=True), x_hat.norm(dim=-1, keepdim=True)
    if name == "substitution":
        return x_hat
    if name == "norm_corrected":
        return x_hat * x_norm / x_hat_norm.clamp_min(1e-30)
    if name == "sae_norm":
        return x * x_hat_norm / x_norm.clamp_min(1e-30)
    if name == "epsilon_random":
        return epsilon_random(x, x_hat, generator)
    if name == "theta_random_sae_norm":
        return theta_random(x, x_hat, generator, x_hat_norm)
    if name == "theta_random_true_norm":
        return theta_random(x, x_hat, generator, x_norm)
    if name == "cov_random":
        return cov_random(x, x_hat, stats, generator)
    if name == "zero":
        return torch.zeros_like(x)
    if name == "mean":
        return stats.mean.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
    raise ValueError(f"unknown intervention {name!r}; known: {', '.join(INTERVENTIONS)}")
