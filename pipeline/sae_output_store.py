"""An SAE's outputs on the analysed rows, as `sae_outputs` stores them: the one place the analyses get x̂.

The `sae_outputs` stage encodes each analysed row once; `probes`, `scaling`, `earlier_components`,
`pursuit` and `error_saes` read what it stored instead of running the SAE again, so they need
neither torch nor the SAE (numpy and zarr only).

Group layout. Row i is activation-store row `first_store_row + i`: the fit rows, then the test
rows (`pipeline.row_split`; rows reserved for SAE training, if any, are not stored):
- `x_hat` (n_fit + n_test, d) float32: the reconstruction; e = x - x_hat;
- `l0` (n_fit + n_test,) int32: active latents per row;
- `error_norm` (n_fit + n_test,) float32: ||e||;
- `latent_fit_sum` (d_sae,) float64 and `latent_fit_count` (d_sae,) int64: per latent, the sum of
  its activations and the number of rows where it is active, over the fit rows.
Attributes: `first_store_row`, `n_fit_rows`, `n_test_rows`, `d_sae`, `metrics` (the SAE's test
metrics), `sae` (the SAE's folder).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.activation_store import block_bounds
from pipeline.row_split import RowSplit
from pipeline.store_integrity import open_checked


@dataclass
class SaeMetrics:
    """Test-token metrics of one SAE (leaf keys of its metrics JSON)."""

    fvu: float
    explained_variance: float
    l0: float
    dead_fraction: float
    n_test_tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


class MetricAccumulator:
    """Streams FVU = sum ||x - x_hat||^2 / sum ||x - mean x||^2 (float64), mean L0 and dead latents."""

    def __init__(self, d: int, d_sae: int):
        self.n = 0
        self.sum_x = np.zeros(d, dtype=np.float64)
        self.sum_sq_x = 0.0
        self.sum_sq_err = 0.0
        self.sum_l0 = 0
        self.fired = np.zeros(d_sae, dtype=bool)

    def update(self, x: np.ndarray, err: np.ndarray, l0: np.ndarray, fired: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.n += len(x)
        self.sum_x += x64.sum(0)
        self.sum_sq_x += float((x64**2).sum())
        self.sum_sq_err += float((err.astype(np.float64) ** 2).sum())
        self.sum_l0 += int(l0.sum())
        self.fired |= fired

    def result(self) -> SaeMetrics:
        total_variance = self.sum_sq_x - float(self.sum_x @ self.sum_x) / self.n
        fvu = self.sum_sq_err / total_variance
        return SaeMetrics(
            fvu=fvu,
            explained_variance=1.0 - fvu,
            l0=self.sum_l0 / self.n,
            dead_fraction=float(1.0 - self.fired.mean()),
            n_test_tokens=self.n,
        )


def stored_rows(split: RowSplit) -> slice:
    """The activation-store rows an SAE-outputs group holds: the fit rows, then the test rows."""
    return slice(split.fit_rows.start, split.n_rows)


class SaeOutputs:
    """A finished `sae_outputs` group, addressed by activation-store row."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.group = open_checked(self.path)
        attrs = self.group.attrs
        missing = [key for key in ("first_store_row", "n_fit_rows", "n_test_rows", "d_sae") if key not in attrs]
        if missing:
            raise ValueError(f"{self.path}: attributes {missing} missing: written by an older sae_outputs; rerun it "
                             "(dvc repro)")
        self.first_store_row = int(attrs["first_store_row"])
        self.n_fit_rows = int(attrs["n_fit_rows"])
        self.n_test_rows = int(attrs["n_test_rows"])
        self.d_sae = int(attrs["d_sae"])
        # Opened once: every block read would otherwise reread the array's metadata.
        self._x_hat, self._l0, self._error_norm = (self.group[name] for name in ("x_hat", "l0", "error_norm"))

    def check_rows(self, split: RowSplit) -> None:
        """Raise unless the group holds exactly the fit and test rows of `split` (the row split of the
        activation or token store the caller reads)."""
        expected = stored_rows(split)
        held = slice(self.first_store_row, self.first_store_row + self.n_fit_rows + self.n_test_rows)
        if (held.start, held.stop, self.first_store_row + self.n_fit_rows) != (expected.start, expected.stop, split.n_train_rows):
            raise ValueError(f"{self.path}: holds activation-store rows [{held.start}, {held.stop}) with "
                             f"{self.n_fit_rows} fit rows, but the row split needs [{expected.start}, "
                             f"{expected.stop}) with the test rows from {split.n_train_rows}; rerun sae_outputs (dvc repro)")

    def _local(self, first: int, stop: int) -> slice:
        if not self.first_store_row <= first <= stop <= self.first_store_row + self.n_fit_rows + self.n_test_rows:
            raise ValueError(f"{self.path}: activation-store rows [{first}, {stop}) are not stored here")
        return slice(first - self.first_store_row, stop - self.first_store_row)

    def x_hat(self, first: int, stop: int) -> np.ndarray:
        """x̂ (float32) of activation-store rows [first, stop)."""
        return self._x_hat[self._local(first, stop)]

    def l0(self, first: int, stop: int) -> np.ndarray:
        return self._l0[self._local(first, stop)]

    def error_norm(self, first: int, stop: int) -> np.ndarray:
        return self._error_norm[self._local(first, stop)]

    def reconstruction(self, first: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x̂, e = x - x̂, L0) for the block `x` of activation-store rows from `first` (float32, float32, int32)."""
        x = np.asarray(x, dtype=np.float32)
        x_hat = self.x_hat(first, first + len(x))
        return x_hat, x - x_hat, self.l0(first, first + len(x))

    def iter_x_hat(self, start: int, stop: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first activation-store row, x̂ block) over rows [start, stop), blocks as `iter_row_blocks` cuts them."""
        for first, end in block_bounds(start, stop, rows):
            yield first, self.x_hat(first, end)

    def latent_fit_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(sum of activations, rows active) per latent over the fit rows."""
        return self.group["latent_fit_sum"][:], self.group["latent_fit_count"][:]
