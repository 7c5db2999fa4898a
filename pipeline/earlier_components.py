"""SPEC experiment 11: can earlier components predict an SAE's error, and its nonlinear part?

For the target SAE (hook `target`, width `width`) the targets are its error e, linear error
e_hat = x W + b (W, b from the `probes` stage) and nonlinear error n = e - e_hat. Predictors
come from each source hook (the same site, the residual stream before the layer, the layer's
MLP output and attention z, each with its own SAE of the same width): the SAE output x_hat,
the activation x, or the SAE error. Also two combinations: every other source's SAE output,
and the target's own activation with them.

One streaming pass over the train rows accumulates the normal equations of *all* predictor
columns at once; every predictor set is a column subset of them. A second pass scores each
set on the test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from sae_lens import SAE
from tqdm.auto import tqdm

from pipeline.activation_store import open_store
from pipeline.config import ConfigError, Hook
from pipeline.harvest import store_path
from pipeline.lstsq import FitScore, NormalEquations
from pipeline.probes import reconstruct
from pipeline.sae_config import sae_name
from pipeline.saes import check_sae_fits, load_sae

KINDS = ("sae_output", "activation", "error")
TARGETS = ("error", "linear_error", "nonlinear_error")


@dataclass
class EarlierComponentsConfig:
    """The `earlier_components` section."""

    target: str = "blocks.15.hook_resid_post"
    """The hook whose SAE error is predicted (it needs an SAE of `width` and its probes)."""
    width: int = 2304
    """The SAE width used at the target and at every source."""
    sources: list[str] = field(
        default_factory=lambda: [
            "blocks.15.hook_resid_post",
            "blocks.14.hook_resid_post",
            "blocks.15.hook_mlp_out",
            "blocks.15.attn.hook_z",
        ]
    )
    """Hooks whose SAE output, activation and error are tried as predictors; each needs an SAE of `width`."""
    ridge: float = 0.0
    """L2 penalty on the maps."""
    block_rows: int = 4096
    """Rows per streamed block."""

    def check_against(self, sae_hooks: list[str], sae_widths: list[int]) -> None:
        """Every hook named here must have an SAE of `width` in the `sae` section."""
        if self.width not in sae_widths:
            raise ConfigError(f"earlier_components.width: {self.width} is not in sae.widths {sae_widths}")
        for key, hook in [("earlier_components.target", self.target)] + [
            (f"earlier_components.sources[{i}]", h) for i, h in enumerate(self.sources)
        ]:
            Hook.parse(hook, key)
            if hook not in sae_hooks:
                raise ConfigError(f"{key}: {hook!r} has no SAE; add it to sae.hooks (now {sae_hooks})")
        if not self.sources:
            raise ConfigError("earlier_components.sources: the list is empty; name at least one hook")


def source_role(source: str, target: str) -> str:
    """A short, stable name of a source relative to the target, used as a metrics key."""
    s, t = Hook.parse(source, "source"), Hook.parse(target, "target")
    if s == t:
        return "same_site"
    if (s.site, s.layer) in {("resid_post", t.layer - 1), ("resid_pre", t.layer)}:
        return "previous_resid"
    if s.layer == t.layer:
        return s.site
    return f"layer{s.layer}_{s.site}"


@dataclass
class PredictorLayout:
    """Which columns of the stacked predictor matrix belong to which (source, kind)."""

    roles: list[str]
    target_role: str
    d: dict[str, int]

    def block(self, role: str, kind: str) -> np.ndarray:
        start = 0
        for r in self.roles:
            for k in KINDS:
                if (r, k) == (role, kind):
                    return np.arange(start, start + self.d[r])
                start += self.d[r]
        raise KeyError((role, kind))

    def predictor_sets(self) -> dict[str, np.ndarray]:
        sets = {f"{role}.{kind}": self.block(role, kind) for role in self.roles for kind in KINDS}
        others = [r for r in self.roles if r != self.target_role]
        if others:
            earlier = np.concatenate([self.block(r, "sae_output") for r in others])
            sets["earlier_sae_outputs"] = earlier
            sets["activation_and_earlier_sae_outputs"] = np.concatenate([self.block(self.target_role, "activation"), earlier])
        return sets


def _features(saes: dict[str, SAE], stores: dict[str, zarr.Array], roles: list[str], first: int, stop: int):
    parts, target_parts = [], {}
    for role in roles:
        x = np.asarray(stores[role][first:stop], dtype=np.float32)
        x_hat, err, _ = reconstruct(saes[role], x)
        parts += [x_hat, x, err]
        target_parts[role] = (x, err)
    return np.hstack(parts), target_parts


def fit_and_score(
    saes: dict[str, SAE],
    stores: dict[str, zarr.Array],
    target_role: str,
    probe_weight: np.ndarray,
    probe_bias: np.ndarray,
    n_train: int,
    cfg: EarlierComponentsConfig,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """{predictor set: {target: test R^2}} for targets e, e_hat, n of the target SAE."""
    roles = list(saes)
    layout = PredictorLayout(roles, target_role, {r: stores[r].shape[1] for r in roles})
    n_rows = stores[target_role].shape[0]

    def blocks(start: int, stop: int, desc: str):
        for first in tqdm(range(start, stop, cfg.block_rows), desc=desc, disable=not progress):
            last = min(first + cfg.block_rows, stop)
            features, by_role = _features(saes, stores, roles, first, last)
            x, err = by_role[target_role]
            linear = x.astype(np.float64) @ probe_weight + probe_bias
            yield features, np.hstack([err, linear, err - linear])

    equations = NormalEquations(bias=True)
    for features, targets in blocks(0, n_train, "earlier_components: fit"):
        equations.update(features, targets)
    sets = layout.predictor_sets()
    fits = {name: equations.solve(cfg.ridge, columns=cols) for name, cols in sets.items()}
    d = layout.d[target_role]
    scores = {name: [FitScore() for _ in TARGETS] for name in sets}
    for features, targets in blocks(n_train, n_rows, "earlier_components: score"):
        for name, cols in sets.items():
            predicted = fits[name].predict(features[:, cols])
            for j, score in enumerate(scores[name]):
                score.update(targets[:, j * d : (j + 1) * d], predicted[:, j * d : (j + 1) * d])
    return {name: {t: s.r2 for t, s in zip(TARGETS, per_target)} for name, per_target in scores.items()}


def open_inputs(cfg: EarlierComponentsConfig, activations: Path, saes_dir: Path, probes_dir: Path):
    """(saes by role, stores by role, target role, probe W, probe b) for the configured hooks
    (the target is always among the sources, as `same_site`)."""
    saes, stores = {}, {}
    for hook in dict.fromkeys([cfg.target, *cfg.sources]):  # keep order, drop repeats
        role = source_role(hook, cfg.target)
        stores[role] = open_store(store_path(activations, hook))
        saes[role] = load_sae(saes_dir / sae_name(hook, cfg.width))
        check_sae_fits(saes[role], stores[role].shape[1], None, str(saes_dir / sae_name(hook, cfg.width)))
        if stores[role].shape[0] != stores["same_site"].shape[0]:
            raise ValueError(f"{store_path(activations, hook)}: {stores[role].shape[0]} rows, the target store "
                             f"{stores['same_site'].shape[0]}; rerun `dvc repro harvest`")
    target_role = "same_site"
    probes = zarr.open_group(probes_dir / f"{sae_name(cfg.target, cfg.width)}.zarr", mode="r")
    return saes, stores, target_role, probes["probe_weight"][:], probes["probe_bias"][:]
