"""Typed `sae` and `train_sae` sections: which SAEs exist, and how trained ones are trained."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.config import DTYPES, ConfigError, Hook

ARCHITECTURES = ("topk", "batchtopk", "standard", "jumprelu")
SOURCES = ("train", "pretrained")


def sae_name(hook: str, width: int, k: int | None = None) -> str:
    """Directory/stage-safe name of one SAE, e.g. 'blocks.15.hook_resid_post-2304'; an SAE of the
    width x k grid (`sae.ks`) also names its k: 'blocks.15.hook_resid_post-2304-k16'."""
    return f"{hook}-{width}" if k is None else f"{hook}-{width}-k{k}"


@dataclass
class SaeSetConfig:
    """The SAEs of a run, trained here or loaded pretrained: two grids, `hooks` x `widths` (the
    width sweep: scaling fits across these widths) and `extra_hooks` x `extra_widths` (typically
    one width at every other site), so that a run need not train every width everywhere."""

    source: str = "train"
    """'train': trained with sae-lens on the harvested train tokens; 'pretrained': loaded with
    `sae_lens.SAE.from_pretrained(release, id)` (or from a local directory in that format)."""
    hooks: list[str] = field(default_factory=lambda: ["blocks.15.hook_resid_post"])
    """Hooks that get SAEs; each must be in harvest.hooks."""
    widths: list[int] = field(default_factory=lambda: [2304])
    """Latent counts (d_sae); every hook of `hooks` gets one SAE per width."""
    extra_hooks: list[str] = field(default_factory=list)
    """More hooks with SAEs (each in harvest.hooks, none in `hooks`), one per width of `extra_widths`."""
    extra_widths: list[int] = field(default_factory=list)
    """Latent counts of the `extra_hooks` SAEs."""
    ks: list[int] = field(default_factory=list)
    """topk/batchtopk, source=train: more values of k, for a width x k grid (Engels et al.'s contour
    figures): each hook of `k_hooks` also gets an SAE of every width of `widths` at every k here."""
    k_hooks: list[str] = field(default_factory=list)
    """Hooks of `hooks` that get the width x k grid (`ks`)."""
    architecture: str = "topk"
    """For source=train: 'topk' (default), 'batchtopk', 'standard' (ReLU + L1) or 'jumprelu'."""
    k: int = 32
    """topk/batchtopk: active latents per token."""
    l1_coefficient: float = 5.0
    """standard: weight of the L1 sparsity penalty."""
    l0_coefficient: float = 1.0
    """jumprelu: weight of the L0 sparsity penalty."""
    jumprelu_init_threshold: float = 0.01
    normalize_activations: str = "expected_average_only_in"
    """How sae-lens scales inputs during training (folded into the weights when saved)."""
    release: dict[str, str] = field(default_factory=dict)
    """For source=pretrained: site -> sae-lens release name (e.g. resid_post:
    gemma-scope-2b-pt-res-canonical), or site -> a local directory holding one sub-directory
    per SAE id in sae-lens format."""
    id_template: Optional[str] = None
    """For source=pretrained: the SAE id, with {hook}, {site}, {layer}, {width} and {width_k}
    (width // 1000, as Gemma Scope names widths: 16k, 65k, 262k) filled in, e.g. 'layer_{layer}/width_{width_k}k/canonical'."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"sae.source: {self.source!r} is not one of {list(SOURCES)}")
        if not self.hooks:
            raise ConfigError("sae.hooks: the list is empty; name at least one harvested hook")
        self.parsed_hooks()
        if not self.widths:
            raise ConfigError("sae.widths: the list is empty; give at least one SAE width (number of latents)")
        for key, widths in (("sae.widths", self.widths), ("sae.extra_widths", self.extra_widths)):
            for i, width in enumerate(widths):
                if width < 1:
                    raise ConfigError(f"{key}[{i}]: must be a positive number of latents, got {width}")
        if bool(self.extra_hooks) != bool(self.extra_widths):
            raise ConfigError(f"sae.extra_hooks / sae.extra_widths: give both or neither (got {self.extra_hooks} and {self.extra_widths})")
        for i, hook in enumerate(self.extra_hooks):
            if hook in self.hooks:
                raise ConfigError(f"sae.extra_hooks[{i}]: {hook!r} is also in sae.hooks; a hook belongs to one of the two grids")
        self._check_k_grid()
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"sae.architecture: {self.architecture!r} is not one of {list(ARCHITECTURES)}")
        if self.architecture in ("topk", "batchtopk"):
            too_wide = [w for w in self.widths + self.extra_widths if self.k > w]
            if self.k < 1 or too_wide:
                raise ConfigError(f"sae.k: must be in [1, width]; got k={self.k} with widths {too_wide or self.widths}")
        if self.source == "pretrained":
            if not self.id_template:
                raise ConfigError("sae.id_template: needed when sae.source=pretrained, e.g. 'layer_{layer}/width_{width_k}k/canonical'")
            for hook in self.parsed_hooks():
                if hook.site not in self.release:
                    raise ConfigError(f"sae.release: no release for site {hook.site!r} (of {hook.name}); has {sorted(self.release)}")

    def _check_k_grid(self) -> None:
        if bool(self.ks) != bool(self.k_hooks):
            raise ConfigError(f"sae.ks / sae.k_hooks: give both or neither (got {self.ks} and {self.k_hooks})")
        if not self.ks:
            return
        if self.architecture not in ("topk", "batchtopk") or self.source != "train":
            raise ConfigError(f"sae.ks: a width x k grid needs trained topk or batchtopk SAEs (sae.source={self.source!r}, "
                              f"sae.architecture={self.architecture!r})")
        for i, k in enumerate(self.ks):
            if k == self.k or not 1 <= k <= min(self.widths) or k in self.ks[:i]:
                raise ConfigError(f"sae.ks[{i}]: {k} must be in [1, {min(self.widths)}] (the narrowest of sae.widths), "
                                  f"differ from sae.k ({self.k}) and appear once")
        for i, hook in enumerate(self.k_hooks):
            if hook not in self.hooks:
                raise ConfigError(f"sae.k_hooks[{i}]: {hook!r} is not in sae.hooks {self.hooks}; the k grid uses sae.widths")

    def k_grid(self) -> list[tuple[str, int, int]]:
        """(hook, width, k) of the width x k grid's SAEs beyond those at `k` (empty without `ks`)."""
        return [(h, w, k) for h in self.k_hooks for w in self.widths for k in self.ks]

    def parsed_hooks(self) -> list[Hook]:
        """Every hook with an SAE: `hooks`, then `extra_hooks`."""
        return [Hook.parse(name, f"sae.hooks[{i}]") for i, name in enumerate(self.hooks)] + [
            Hook.parse(name, f"sae.extra_hooks[{i}]") for i, name in enumerate(self.extra_hooks)
        ]

    def pairs(self) -> list[tuple[str, int]]:
        """(hook, width) of every SAE: the `hooks` x `widths` grid, then `extra_hooks` x `extra_widths`."""
        return [(h, w) for h in self.hooks for w in self.widths] + [(h, w) for h in self.extra_hooks for w in self.extra_widths]

    def names(self) -> list[str]:
        """Every SAE: the two grids (at `k`), then the width x k grid's."""
        return [sae_name(h, w) for h, w in self.pairs()] + [sae_name(h, w, k) for h, w, k in self.k_grid()]

    def has(self, hook: str, width: int) -> bool:
        return (hook, width) in self.pairs()

    def pretrained_id(self, hook: Hook, width: int) -> str:
        return self.id_template.format(hook=hook.name, site=hook.site, layer=hook.layer, width=width, width_k=width // 1000)


@dataclass
class TrainSaeConfig:
    """How SAEs are trained (source=train)."""

    tokens: int = 150_000
    """Training samples per SAE (epochs over the train split as needed)."""
    batch_size: int = 1024
    lr: float = 2e-3
    lr_warm_up_steps: int = 0
    lr_decay_fraction: float = 0.2
    """Share of the steps, at the end, over which the learning rate decays linearly to 0."""
    init_b_dec: str = "mean"
    """'mean': start the decoder bias at the data mean (recommended); 'zeros': sae-lens's default."""
    shuffle_chunks: int = 8
    """Zarr chunks mixed in one shuffle buffer (memory: shuffle_chunks x chunk_rows x d)."""
    dead_feature_window: int = 20
    """Steps without firing after which a latent counts as dead (TopK's aux loss revives them)."""
    log_every: int = 5
    """Steps between points of the training curve."""
    checkpoint_every: int = 100
    """Steps between checkpoints of the train_sae stage (0: none); a killed stage resumes from the
    last one and ends with the same SAE. Kept in .scratch/train_sae, deleted once the SAE is saved."""
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    autocast: bool = False
    """Run the SAE's forward and backward under bfloat16 autocast (weights and Adam state stay in
    `dtype`; sae-lens's own `autocast`). Off by default: benchmarks/sae_bf16.py measures its speed and
    its cost in test FVU (README, "SAEs")."""

    def __post_init__(self) -> None:
        if self.tokens < self.batch_size:
            raise ConfigError(f"train_sae.tokens: {self.tokens} is less than one batch (train_sae.batch_size={self.batch_size})")
        if self.batch_size < 1:
            raise ConfigError(f"train_sae.batch_size: must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.lr_decay_fraction <= 1.0:
            raise ConfigError(f"train_sae.lr_decay_fraction: must be in [0, 1], got {self.lr_decay_fraction}")
        if self.init_b_dec not in ("mean", "zeros"):
            raise ConfigError(f"train_sae.init_b_dec: {self.init_b_dec!r} is not one of ['mean', 'zeros']")
        if self.checkpoint_every < 0:
            raise ConfigError(f"train_sae.checkpoint_every: must be >= 0 (0: no checkpoints), got {self.checkpoint_every}")
        if self.shuffle_chunks < 1:
            raise ConfigError(f"train_sae.shuffle_chunks: must be >= 1, got {self.shuffle_chunks}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"train_sae.dtype: {self.dtype!r} is not one of {list(DTYPES)}")

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_size
