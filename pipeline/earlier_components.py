"""docs/science.md, "Earlier components": can earlier components predict an SAE's error, and its nonlinear part?

For the target SAE (hook `target`, width `width`) the targets are its error e, linear error
e_hat = x W + b (W, b from the `probes` stage) and nonlinear error n = e - e_hat. Predictors
come from each source hook (the same site, the residual stream before the layer, the layer's
MLP output and attention z, each with its own SAE of the same width): the SAE output x_hat,
the activation x, or the SAE error. Also two combinations: every other source's SAE output,
and the target's own activation with them.

One streaming pass over the train rows accumulates the normal equations of every predictor
set (the two combinations share one); a second pass scores each set on the test rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from pipeline.activation_store import open_store, store_path
from pipeline.analysis_config import EarlierComponentsConfig
from pipeline.config import Hook
from pipeline.lstsq import FitScore, NormalEquations
from pipeline.row_split import RowSplit
from pipeline.sae_config import sae_name
from pipeline.sae_output_store import SaeOutputs
from pipeline.store_integrity import open_checked

KINDS = ("sae_output", "activation", "error")
TARGETS = ("error", "linear_error", "nonlinear_error")


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


def predictor_sets(roles: list[str], target_role: str) -> dict[str, list[tuple[str, str]]]:
    """{set name: the (role, kind) blocks it concatenates}."""
    sets = {f"{role}.{kind}": [(role, kind)] for role in roles for kind in KINDS}
    others = [(r, "sae_output") for r in roles if r != target_role]
    if others:
        sets["earlier_sae_outputs"] = others
        sets["activation_and_earlier_sae_outputs"] = [(target_role, "activation"), *others]
    return sets


def _blocks(outputs: dict[str, SaeOutputs], stores: dict[str, zarr.Array], first: int, stop: int) -> dict[tuple[str, str], np.ndarray]:
    blocks = {}
    for role, stored in outputs.items():
        x = np.asarray(stores[role][first:stop], dtype=np.float32)
        x_hat, err, _ = stored.reconstruction(first, x)
        blocks[role, "sae_output"], blocks[role, "activation"], blocks[role, "error"] = x_hat, x, err
    return blocks


def fit_and_score(
    outputs: dict[str, SaeOutputs],
    stores: dict[str, zarr.Array],
    target_role: str,
    probe_weight: np.ndarray,
    probe_bias: np.ndarray,
    cfg: EarlierComponentsConfig,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """{predictor set: {target: test R^2}} for targets e, e_hat, n of the target SAE.

    Each single (source, kind) set has its own normal equations; the combined sets share one
    over their union (the second is a column subset), so memory is O(sum of their squared widths)."""
    sets = predictor_sets(list(outputs), target_role)
    combined = max(sets.values(), key=len)  # the union of every multi-block set
    systems = {name: blocks for name, blocks in sets.items() if len(blocks) == 1}
    systems["combined"] = combined
    n_rows = stores[target_role].shape[0]
    split = RowSplit.of(stores[target_role])
    fit_start, n_train = split.fit_rows.start, split.n_train_rows

    def batches(start: int, stop: int, desc: str):
        for first in tqdm(range(start, stop, cfg.block_rows), desc=desc, disable=not progress):
            blocks = _blocks(outputs, stores, first, min(first + cfg.block_rows, stop))
            x, err = blocks[target_role, "activation"], blocks[target_role, "error"]
            linear = x.astype(np.float64) @ probe_weight + probe_bias
            features = {name: np.hstack([blocks[b] for b in parts]) for name, parts in systems.items()}
            yield features, np.hstack([err, linear, err - linear])

    equations = {name: NormalEquations(bias=True) for name in systems}
    for features, targets in batches(fit_start, n_train, "earlier_components: fit"):
        for name, eq in equations.items():
            eq.update(features[name], targets)

    def columns_in_combined(parts):
        widths = [stores[role].shape[1] for role, _ in combined]
        starts = np.concatenate([[0], np.cumsum(widths)])
        return np.concatenate([np.arange(starts[combined.index(p)], starts[combined.index(p) + 1]) for p in parts])

    fits, inputs = {}, {}
    for name, parts in sets.items():
        if len(parts) == 1:
            fits[name], inputs[name] = equations[name].solve(cfg.ridge), (name, None)
        else:
            cols = columns_in_combined(parts)
            fits[name], inputs[name] = equations["combined"].solve(cfg.ridge, columns=cols), ("combined", cols)
    d = stores[target_role].shape[1]
    scores = {name: [FitScore() for _ in TARGETS] for name in sets}
    for features, targets in batches(n_train, n_rows, "earlier_components: score"):
        for name in sets:
            system, cols = inputs[name]
            x = features[system] if cols is None else features[system][:, cols]
            predicted = fits[name].predict(x)
            for j, score in enumerate(scores[name]):
                score.update(targets[:, j * d : (j + 1) * d], predicted[:, j * d : (j + 1) * d])
    return {name: {t: s.r2 for t, s in zip(TARGETS, per_target)} for name, per_target in scores.items()}


def open_inputs(cfg: EarlierComponentsConfig, activations: Path, sae_outputs_dir: Path, probes_dir: Path):
    """(SAE outputs by role, stores by role, target role, probe W, probe b) for the configured hooks
    (the target is always among the sources, as `same_site`)."""
    outputs, stores = {}, {}
    for hook in dict.fromkeys([cfg.target, *cfg.sources]):  # keep order, drop repeats
        role = source_role(hook, cfg.target)
        stores[role] = open_store(store_path(activations, hook))
        if stores[role].shape[0] != stores["same_site"].shape[0]:
            raise ValueError(f"{store_path(activations, hook)}: {stores[role].shape[0]} rows, the target store "
                             f"{stores['same_site'].shape[0]}; rerun `dvc repro harvest`")
        outputs[role] = SaeOutputs(sae_outputs_dir / f"{sae_name(hook, cfg.width)}.zarr")
        outputs[role].check_rows(RowSplit.of(stores[role]))
    target_role = "same_site"
    probes = open_checked(probes_dir / f"{sae_name(cfg.target, cfg.width)}.zarr")
    return outputs, stores, target_role, probes["probe_weight"][:], probes["probe_bias"][:]
