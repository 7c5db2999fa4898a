"""Baselines for the error-norm probe (docs/science.md, "Error norm"): how well do simple per-token
quantities predict ||e||^2 and ||e||, compared with a linear probe on x?

Each baseline is fitted on train rows and scored on test rows:
- `token_id_mean`: the train mean of the target for the token's id (the global mean for ids
  never seen in training);
- `lm_loss_current`, `lm_loss_next`: the LM's loss on this token / on the next one;
- `sae_l0`: the SAE's number of active latents;
- `x_norm`: ||x||;
each of the last four through a one-feature linear fit with a bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from pipeline.lstsq import FitScore, LinearFit, NormalEquations
from pipeline.store_integrity import open_checked

SCALAR_BASELINES = ("lm_loss_current", "lm_loss_next", "sae_l0", "x_norm")
BASELINES = ("token_id_mean", *SCALAR_BASELINES)


@dataclass
class RowFeatures:
    """Per-row inputs that are not activations, read block by block (row-aligned with the stores)."""

    token_ids: zarr.Array
    loss_current: zarr.Array
    loss_next: zarr.Array

    @staticmethod
    def open(token_store: Path, lm_loss: Path, n_rows: int) -> "RowFeatures":
        tokens = open_checked(token_store)
        losses = open_checked(lm_loss)
        if int(losses.attrs.get("n_rows", -1)) != n_rows:
            raise ValueError(
                f"{lm_loss}: holds {losses.attrs.get('n_rows')} rows, the activation store {n_rows}; "
                "rerun `dvc repro lm_loss` (it predates per-row losses for train tokens, or another token store)"
            )
        return RowFeatures(tokens["rows/token"], losses["loss_current"], losses["loss_next"])

    def block(self, first: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(token ids, {lm_loss_current, lm_loss_next}) of rows [first, stop)."""
        losses = {"lm_loss_current": self.loss_current[first:stop], "lm_loss_next": self.loss_next[first:stop]}
        return self.token_ids[first:stop].astype(np.int64), losses


class NormBaselines:
    """Streams the baseline fits over train blocks, then predicts on test blocks.

    Targets are (rows, t) arrays (here [||e||^2, ||e||]); a feature that is NaN (the LM's loss at
    a context's last position has no next token) is left out of the fit and imputed with its
    train mean when predicting.
    """

    def __init__(self):
        self.equations = {name: NormalEquations(bias=True) for name in SCALAR_BASELINES}
        self.feature_sum = dict.fromkeys(SCALAR_BASELINES, 0.0)
        self.feature_count = dict.fromkeys(SCALAR_BASELINES, 0)
        self.token_sum: np.ndarray | None = None
        self.token_count = np.zeros(0)
        self.fits: dict[str, LinearFit] = {}

    def update(self, token_ids: np.ndarray, features: dict[str, np.ndarray], targets: np.ndarray) -> None:
        targets = np.asarray(targets, dtype=np.float64)
        if self.token_sum is None:
            self.token_sum = np.zeros((0, targets.shape[1]))
        size = int(token_ids.max()) + 1
        if size > len(self.token_count):
            self.token_sum = np.vstack([self.token_sum, np.zeros((size - len(self.token_sum), targets.shape[1]))])
            self.token_count = np.concatenate([self.token_count, np.zeros(size - len(self.token_count))])
        np.add.at(self.token_sum, token_ids, targets)
        self.token_count += np.bincount(token_ids, minlength=len(self.token_count))
        for name in SCALAR_BASELINES:
            feature = np.asarray(features[name], dtype=np.float64)
            finite = np.isfinite(feature)
            self.feature_sum[name] += float(feature[finite].sum())
            self.feature_count[name] += int(finite.sum())
            self.equations[name].update(feature[finite, None], targets[finite])

    def solve(self) -> None:
        self.fits = {name: eq.solve() for name, eq in self.equations.items()}
        self.global_mean = self.token_sum.sum(0) / self.token_count.sum()
        seen = self.token_count > 0
        self.token_mean = np.tile(self.global_mean, (len(self.token_count), 1))
        self.token_mean[seen] = self.token_sum[seen] / self.token_count[seen, None]

    def predict(self, token_ids: np.ndarray, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        known = token_ids < len(self.token_mean)
        by_token = np.tile(self.global_mean, (len(token_ids), 1))
        by_token[known] = self.token_mean[token_ids[known]]
        predictions = {"token_id_mean": by_token}
        for name in SCALAR_BASELINES:
            feature = np.asarray(features[name], dtype=np.float64)
            feature = np.where(np.isfinite(feature), feature, self.feature_sum[name] / self.feature_count[name])
            predictions[name] = self.fits[name].predict(feature[:, None])
        return predictions


class BaselineScores:
    """Test R^2 of every baseline, per target column."""

    def __init__(self):
        self.scores = {name: FitScore() for name in BASELINES}

    def update(self, targets: np.ndarray, predictions: dict[str, np.ndarray]) -> None:
        for name, score in self.scores.items():
            score.update(targets, predictions[name])

    def r2(self, column: int) -> dict[str, float]:
        """{baseline: R^2 of target column `column`}."""
        return {name: float(1.0 - s.sse[column] / s.sst[column]) for name, s in self.scores.items()}
