"""The one answer to "which rows and contexts play which role".

Rows are scored tokens, in token-index order (row i of every activation store is row i of the
token store). Contexts are ordered train first, then test, and rows follow their contexts:

    rows [0, n_sae_rows)             train SAEs (every train row when tokens.sae_fraction = 0)
    rows [n_sae_rows, n_train_rows)  fit the dark-matter analyses (probes, maps, baselines)
    rows [n_train_rows, n_rows)      test rows: every reported number is measured on them
    contexts [n_train_contexts, n_contexts)  test contexts (the LM-level experiments)

The tokens stage writes these six counts into the token store's attributes; harvest copies
them into every activation store, so a stage reads the split from whichever store it opens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class RowSplit:
    """Row and context counts of a token store; slices for each role."""

    n_rows: int
    n_train_rows: int
    n_sae_rows: int
    n_contexts: int
    n_train_contexts: int
    n_sae_contexts: int

    def __post_init__(self) -> None:
        if not 0 <= self.n_sae_rows <= self.n_train_rows <= self.n_rows:
            raise ValueError(f"row split: need 0 <= n_sae_rows <= n_train_rows <= n_rows, got {self}")
        if not 0 <= self.n_sae_contexts <= self.n_train_contexts <= self.n_contexts:
            raise ValueError(f"row split: need 0 <= n_sae_contexts <= n_train_contexts <= n_contexts, got {self}")

    @staticmethod
    def from_attrs(attrs: Mapping[str, Any], where: str) -> "RowSplit":
        """Read the split from a store's attributes; `where` names the store in the error."""
        missing = [f.name for f in fields(RowSplit) if f.name not in attrs]
        if missing:
            raise ValueError(f"{where}: attributes {missing} missing; the store predates the row split, rerun "
                             "the stage that wrote it (dvc repro -f -s tokens, then dvc repro)")
        return RowSplit(**{f.name: int(attrs[f.name]) for f in fields(RowSplit)})

    @staticmethod
    def of(store: Any) -> "RowSplit":
        """The split recorded in a Zarr array or group (a token store or an activation store)."""
        return RowSplit.from_attrs(store.attrs, str(getattr(store, "store_path", None) or getattr(store, "path", store)))

    def as_attrs(self) -> dict[str, int]:
        return asdict(self)

    @property
    def train_rows(self) -> slice:
        """Every train row: SAE-training rows and fit rows together."""
        return slice(0, self.n_train_rows)

    @property
    def sae_train_rows(self) -> slice:
        """Rows SAEs train on: those reserved by tokens.sae_fraction, else every train row."""
        return slice(0, self.n_sae_rows or self.n_train_rows)

    @property
    def fit_rows(self) -> slice:
        """Rows the dark-matter fits train on: train rows no SAE trained on."""
        return slice(self.n_sae_rows, self.n_train_rows)

    @property
    def test_rows(self) -> slice:
        return slice(self.n_train_rows, self.n_rows)

    @property
    def n_test_rows(self) -> int:
        return self.n_rows - self.n_train_rows

    def test_contexts(self, limit: int | None = None) -> slice:
        """The first `limit` test contexts (all of them when None)."""
        stop = self.n_contexts if limit is None else min(self.n_contexts, self.n_train_contexts + limit)
        return slice(self.n_train_contexts, stop)
