"""Streaming least squares: fit Y ~ X W (+ b) over row blocks, then score on other row blocks.

Memory is O(d_in^2 + d_in d_out + one block), whatever the number of rows. Sums are kept in
float64 about a pilot shift (the first block's means), so that large, uncentred activations
(a residual stream's mean is most of its norm) lose no precision to cancellation.

With a bias the intercept is not penalised: W = (Cxx + ridge I)^-1 Cxy on centred data and
b = mean(Y) - mean(X) W. Without one, W = (X'X + ridge I)^-1 X'Y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LinearFit:
    W: np.ndarray  # (d_in, d_out)
    b: np.ndarray  # (d_out,); zeros without a bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x W + b in float64 (the product in float32: ample for scoring, twice as fast)."""
        product = np.asarray(x, dtype=np.float32) @ self.W.astype(np.float32)
        return product.astype(np.float64) + self.b


class NormalEquations:
    """Accumulates the sufficient statistics of a least-squares fit, block by block."""

    def __init__(self, bias: bool = True):
        self.bias = bias
        self.n = 0
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        xc = np.array(x, dtype=np.float64)  # our own float64 copies, centred in place below
        yc = np.array(y, dtype=np.float64)
        if yc.ndim == 1:
            yc = yc[:, None]
        if not (np.isfinite(xc).all() and np.isfinite(yc).all()):
            bad = int((~np.isfinite(xc).all(1) | ~np.isfinite(yc).all(1)).sum())
            raise ValueError(f"least squares: {bad} of {len(xc)} rows of this block (after {self.n} rows) hold NaN or inf; "
                             "a fit needs finite inputs and targets (check the store the rows came from)")
        if self.shift_x is None:
            self.shift_x = xc.mean(0) if self.bias else np.zeros(xc.shape[1])
            self.shift_y = yc.mean(0) if self.bias else np.zeros(yc.shape[1])
            self.xx = np.zeros((xc.shape[1], xc.shape[1]))
            self.xy = np.zeros((xc.shape[1], yc.shape[1]))
            self.sx = np.zeros(xc.shape[1])
            self.sy = np.zeros(yc.shape[1])
        xc -= self.shift_x
        yc -= self.shift_y
        self.xx += xc.T @ xc  # numpy computes A.T @ A as a symmetric rank-k update: half a gemm
        self.xy += xc.T @ yc
        self.sx += xc.sum(0)
        self.sy += yc.sum(0)
        self.n += len(xc)

    def solve(self, ridge: float = 0.0, columns: np.ndarray | None = None) -> LinearFit:
        """The fit on all input columns, or on the subset `columns` (the sums of any subset are
        sub-blocks of the full ones: one pass serves every subset)."""
        if self.n == 0:
            raise ValueError("no rows were accumulated")
        cols = np.arange(len(self.xx)) if columns is None else np.asarray(columns)
        xx, xy = self.xx[np.ix_(cols, cols)], self.xy[cols]
        shift_x, shift_y = self.shift_x[cols], self.shift_y
        if self.bias:
            mx, my = self.sx[cols] / self.n, self.sy / self.n
            xx = xx - self.n * np.outer(mx, mx)
            xy = xy - self.n * np.outer(mx, my)
        if ridge:
            xx = xx + ridge * np.eye(len(xx))
        # The minimum-norm solution (LAPACK gelsd) without a ridge: a rank-deficient X'X (a dead
        # dimension, a constant feature) still gets a fit.
        W = np.linalg.lstsq(xx, xy, rcond=None)[0] if ridge == 0 else np.linalg.solve(xx, xy)
        b = (my + shift_y) - (mx + shift_x) @ W if self.bias else np.zeros(xy.shape[1])
        return LinearFit(W=W, b=b)


class FitScore:
    """Streams R^2 of predictions: variance-weighted (1 - FVU) and the mean over output dims."""

    def __init__(self):
        self.n = 0
        self.shift: np.ndarray | None = None

    def update(self, y: np.ndarray, y_hat: np.ndarray) -> None:
        y = np.array(y, dtype=np.float64)  # a copy we may modify
        y_hat = np.asarray(y_hat, dtype=np.float64)
        if y.ndim == 1:
            y, y_hat = y[:, None], y_hat[:, None]
        if self.shift is None:
            self.shift = y.mean(0)
            self.sse = np.zeros(y.shape[1])
            self.sy = np.zeros(y.shape[1])
            self.syy = np.zeros(y.shape[1])
        residual = y - y_hat
        y -= self.shift  # y is our own copy (see above): centred in place
        self.sse += np.einsum("ij,ij->j", residual, residual)  # one pass, no squared temporary
        self.sy += y.sum(0)
        self.syy += np.einsum("ij,ij->j", y, y)
        self.n += len(y)

    @property
    def sst(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("R^2: no rows were scored (an empty split)")
        return self.syy - self.sy**2 / self.n

    @property
    def fvu(self) -> float:
        """Σ sse / Σ sst. A target with no variance at all has FVU 0 if predicted exactly, else 1
        (sklearn's `r2_score` convention, force_finite)."""
        sst = self.sst.sum()
        if sst <= 0:
            return 0.0 if self.sse.sum() == 0 else 1.0
        return float(self.sse.sum() / sst)

    @property
    def r2(self) -> float:
        """1 - FVU: the share of the target's total variance explained."""
        return 1.0 - self.fvu

    @property
    def r2_dims(self) -> float:
        """Unweighted mean over output dimensions of per-dimension R^2 (what the paper's code
        reports). A dimension with no variance scores 1 if predicted exactly, else 0 (sklearn's
        `r2_score` convention, force_finite)."""
        sst = self.sst
        constant = sst <= 0
        per_dim = np.where(constant, np.where(self.sse == 0, 1.0, 0.0), 1.0 - self.sse / np.where(constant, 1.0, sst))
        return float(np.mean(per_dim))
