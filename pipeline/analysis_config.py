"""Typed sections of the analyses that run on trained SAEs.

Every section that uses SAEs names them the same way: `hooks` and `widths`, meaning every SAE
hook x width (each must exist in the `sae` section; `pipeline.params_check` checks that for the
whole file before any stage runs). Sections built on one SAE (`synthetic`, `earlier_components`)
take one-element lists. This module imports only the standard library and omegaconf, so that
checking a configuration is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.config import ConfigError

FOCUS_HOOK = "blocks.15.hook_resid_post"
FOCUS_WIDTH = 2304


def _focus_hooks() -> list[str]:
    return [FOCUS_HOOK]


def _focus_widths() -> list[int]:
    return [FOCUS_WIDTH]


@dataclass
class SaeOutputsConfig:
    """The `sae_outputs` section."""

    block_rows: int = 4096
    """Test rows per streamed block."""
    device: str = "auto"
    """Where the SAE runs: auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps."""

    def __post_init__(self) -> None:
        if self.block_rows < 1:
            raise ConfigError(f"sae_outputs.block_rows: must be >= 1, got {self.block_rows}")


@dataclass
class ProbesConfig:
    """The `probes` section."""

    bias: bool = True
    """Fit e ~ x W + b; false reproduces the paper code's no-bias fit."""
    ridge: float = 0.0
    """L2 penalty on W (not on b)."""
    block_rows: int = 4096
    """Rows per streamed block."""

    def __post_init__(self) -> None:
        if self.ridge < 0:
            raise ConfigError(f"probes.ridge: must be >= 0, got {self.ridge}")
        if self.block_rows < 1:
            raise ConfigError(f"probes.block_rows: must be >= 1, got {self.block_rows}")


@dataclass
class EarlierComponentsConfig:
    """The `earlier_components` section."""

    hooks: list[str] = field(default_factory=_focus_hooks)
    """One hook: the target whose SAE error is predicted (it needs an SAE of `widths[0]` and its probes)."""
    widths: list[int] = field(default_factory=_focus_widths)
    """One width: the SAE width used at the target and at every source."""
    sources: list[str] = field(
        default_factory=lambda: [FOCUS_HOOK, "blocks.14.hook_resid_post", "blocks.15.hook_mlp_out", "blocks.15.attn.hook_z"]
    )
    """Hooks whose SAE output, activation and error are tried as predictors; each needs an SAE of `widths[0]`."""
    ridge: float = 0.0
    """L2 penalty on the maps."""
    block_rows: int = 4096
    """Rows per streamed block."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("earlier_components.sources: the list is empty; name at least one hook")
        if self.ridge < 0 or self.block_rows < 1:
            raise ConfigError("earlier_components.ridge / block_rows: need ridge >= 0 and block_rows >= 1")

    @property
    def target(self) -> str:
        return self.hooks[0]

    @property
    def width(self) -> int:
        return self.widths[0]


@dataclass
class ScalingConfig:
    """The `scaling` section (it runs on every hook of `sae.hooks`, across `sae.widths`)."""

    min_widths_for_fit: int = 3
    """The power law has three parameters: hooks with fewer SAE widths get no fit."""
    smoothing_latents: int = 50
    """Window (in latents, sorted by mean activation) of the running mean in the latent-vs-probe figure."""
    block_rows: int = 4096
    """Rows per streamed block."""


@dataclass
class SyntheticConfig:
    """The `synthetic` section."""

    hooks: list[str] = field(default_factory=_focus_hooks)
    """One hook: whose activations and SAE (of `widths[0]`) build the synthetic model."""
    widths: list[int] = field(default_factory=_focus_widths)
    """One width."""
    train_rows: int = 20000
    """Rows taken from the start of the fit rows (train rows no SAE trained on): the linear map's fit."""
    test_rows: int = 8000
    """Rows taken from the start of the test split (all reported FVUs)."""
    activation_noise: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2])
    """sigma_a values, in units of the activations' per-dimension standard deviation."""
    introduced_noise: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2])
    """sigma_r values, same units."""
    masked_fraction: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5])
    """Shares of latents (lowest mean activation first) dropped from the reconstruction."""
    seed: int = 0
    """Seeds the planted noise."""
    device: str = "auto"
    """Where the SAE runs: auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps."""

    def __post_init__(self) -> None:
        for key in ("activation_noise", "introduced_noise", "masked_fraction"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"synthetic.{key}: the list is empty")
            if any(v < 0 for v in values) or (key == "masked_fraction" and any(v >= 1 for v in values)):
                raise ConfigError(f"synthetic.{key}: values must be >= 0" + (" and < 1" if key == "masked_fraction" else "") + f", got {values}")
        if self.train_rows < 1 or self.test_rows < 1:
            raise ConfigError(f"synthetic.train_rows / test_rows: must be >= 1, got {self.train_rows} / {self.test_rows}")

    @property
    def hook(self) -> str:
        return self.hooks[0]

    @property
    def width(self) -> int:
        return self.widths[0]


@dataclass
class InterventionsConfig:
    """The `interventions` section (the LM runs as the `lm` section says).

    Cost per batch of `batch_size` contexts, in forward passes: 1 clean pass, then spliced passes
    that run only the layers after the hook: 8 + n_draws for the first setting of `positions`
    (every replacement, epsilon_random `n_draws` times), 1 + n_draws for each further setting
    (substitution and the draws), and 1 + single_position_draws for the single-position mode.
    """

    hooks: list[str] = field(default_factory=_focus_hooks)
    """Hooks whose SAEs are spliced in (each needs SAEs of `widths`)."""
    widths: list[int] = field(default_factory=_focus_widths)
    """SAE widths to run (a subset of sae.widths)."""
    n_contexts: int = 32
    """Test contexts used, from the start of the test split."""
    batch_size: int = 4
    """Contexts per forward pass (each context runs once per replacement and draw)."""
    n_draws: int = 8
    """epsilon_random draws per token (>= 2): the KL ratio's denominator and the epsilon_random
    entry average them all; the per-token z-scores use their mean and spread."""
    positions: list[str] = field(default_factory=lambda: ["scored", "all"])
    """Splice-position settings, each of `scored` (replace and average over the scored tokens:
    positions >= tokens.skip_positions that are not document separators) and `all` (Gurnee's
    code: replace at every position, BOS included, average over every position but the last).
    The first gives every top-level number; each further one adds its KL ratio and z-scores."""
    single_position: Optional[int] = 64
    """Position p of the single-position mode (null: off)."""
    window: int = 16
    """Single-position mode: KL is measured at p .. p + window; a context whose window holds a
    document separator or an unscored position is left out."""
    single_position_draws: int = 4
    """epsilon_random draws at p per context in the single-position mode (>= 2)."""
    bootstrap: int = 1000
    """Bootstrap resamples (of tokens, and of each token's draws) for the confidence intervals."""
    seed: int = 0
    """Seeds the random perturbations and the bootstrap."""

    POSITION_SETTINGS = ("scored", "all")  # not a field: no annotation

    def __post_init__(self) -> None:
        if self.n_contexts < 1 or self.batch_size < 1 or self.bootstrap < 1:
            raise ConfigError("interventions.n_contexts / batch_size / bootstrap must be >= 1")
        if self.n_draws < 2:
            raise ConfigError(f"interventions.n_draws: {self.n_draws} draw(s) give no spread for the z-scores and the "
                              "ratio's interval; use >= 2")
        if self.single_position_draws < 2:
            raise ConfigError(f"interventions.single_position_draws: must be >= 2 (a spread for the interval), "
                              f"got {self.single_position_draws}")
        if not self.positions:
            raise ConfigError("interventions.positions: needs at least one setting, e.g. [scored]")
        for i, setting in enumerate(self.positions):
            if setting not in self.POSITION_SETTINGS:
                raise ConfigError(f"interventions.positions[{i}]: {setting!r} is not one of {list(self.POSITION_SETTINGS)}")
        if len(set(self.positions)) < len(self.positions):
            raise ConfigError(f"interventions.positions: {list(self.positions)} names a setting twice")

    def check_positions(self, context_length: int, skip: int) -> None:
        """The single position must be a scored position that has a next token."""
        if self.single_position is not None and not skip <= self.single_position < context_length - 1:
            raise ConfigError(
                f"interventions.single_position: {self.single_position} must be a scored position with a next token, "
                f"in [{skip}, {context_length - 2}] (tokens.skip_positions .. context_length - 2)"
            )


@dataclass
class ComponentCeConfig:
    """The `component_ce` section (the LM runs as the `lm` section says)."""

    hooks: list[str] = field(default_factory=_focus_hooks)
    """Hooks whose SAEs (of `widths`) and probes are used; each needs its `probes` output."""
    widths: list[int] = field(default_factory=_focus_widths)
    """SAE widths to run (a subset of sae.widths)."""
    n_contexts: int = 32
    """Test contexts, from the start of the test split."""
    batch_size: int = 4
    """Contexts per forward pass (each context runs three times: x_hat, + linear, + nonlinear error)."""

    def __post_init__(self) -> None:
        if self.n_contexts < 1 or self.batch_size < 1:
            raise ConfigError("component_ce.n_contexts / batch_size: must be >= 1")


@dataclass
class PursuitConfig:
    """The `pursuit` section."""

    hooks: list[str] = field(default_factory=_focus_hooks)
    """Hooks whose SAEs (of `widths`) are re-encoded by pursuit."""
    widths: list[int] = field(default_factory=_focus_widths)
    """SAE widths to run (a subset of sae.widths)."""
    fit_rows: int = 20000
    """At most this many fit rows (from their start) train the linear probes of both errors."""
    test_rows: Optional[int] = None
    """At most this many test rows (from their start) are scored (null: all); pursuit costs about
    100x an encoder pass per token, so this bounds the stage's time."""
    block_rows: int = 1024
    """Tokens per pursuit batch."""
    device: str = "auto"
    """Where the SAE runs: auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps."""

    def __post_init__(self) -> None:
        if self.fit_rows < 1 or self.block_rows < 1 or (self.test_rows is not None and self.test_rows < 1):
            raise ConfigError("pursuit.fit_rows / pursuit.test_rows / pursuit.block_rows: must be >= 1")


@dataclass
class ErrorSaesConfig:
    """The `error_saes` section (the SAEs train as `sae` and `train_sae` say)."""

    hooks: list[str] = field(default_factory=_focus_hooks)
    """Hooks whose SAE (of each of `widths`) has its error components learned by new SAEs."""
    widths: list[int] = field(default_factory=_focus_widths)
    """SAE widths to run (a subset of sae.widths)."""
    block_rows: int = 4096
    """Rows per streamed block."""
    judge: Optional[str] = None
    """Automated interpretability (`pipeline.judge`): "package.module:attribute" of a judge
    factory, or null (off)."""
    judge_latents: int = 20
    """Latents judged per error SAE (the most often active on the judged rows)."""
    judge_examples: int = 10
    """Top-activating contexts shown per latent."""
    judge_rows: int = 4096
    """Test rows (from their start) searched for the top-activating contexts."""


SELECTING_SECTIONS: dict[str, type] = {
    "earlier_components": EarlierComponentsConfig,
    "synthetic": SyntheticConfig,
    "interventions": InterventionsConfig,
    "component_ce": ComponentCeConfig,
    "pursuit": PursuitConfig,
    "error_saes": ErrorSaesConfig,
}
"""Sections that name SAEs by `hooks` x `widths`."""

SINGLE_SAE_SECTIONS = ("earlier_components", "synthetic")
"""Of those, the ones built on exactly one SAE."""

ANALYSIS_SECTIONS: dict[str, type] = {
    "sae_outputs": SaeOutputsConfig,
    "probes": ProbesConfig,
    "scaling": ScalingConfig,
    **SELECTING_SECTIONS,
}
