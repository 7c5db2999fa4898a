"""The row split: one object, read from a store's attributes, for every role a row or context plays."""

import numpy as np
import pytest
import zarr

from pipeline.config import DataConfig, TokensConfig
from pipeline.row_split import RowSplit
from pipeline.tokens import TokenStore, split_train_first, write_token_store

BOS = 0


def _token_store(tmp_path, sae_fraction: float) -> TokenStore:
    cfg = TokensConfig(context_length=12, n_contexts=10, skip_positions=3, test_fraction=0.3, sae_fraction=sae_fraction)
    contexts = np.random.default_rng(0).integers(1, 50, size=(cfg.n_contexts, cfg.context_length)).astype(np.int32)
    contexts[:, 0] = BOS
    contexts[2, 7] = BOS  # a document separator: never scored
    ordered, n_train = split_train_first(contexts, cfg)
    return write_token_store(tmp_path / "tokens.zarr", ordered, n_train, cfg, DataConfig(), BOS, "test",
                             n_sae=cfg.n_sae_contexts(n_train))


def test_split_matches_the_scored_mask_counted_by_hand(tmp_path):
    tokens = _token_store(tmp_path, sae_fraction=0.5)
    split = tokens.split
    per_context = (tokens.contexts != BOS)[:, 3:].sum(1)  # scored tokens of each context
    assert (split.n_contexts, split.n_train_contexts, split.n_sae_contexts) == (10, 7, 4)
    assert split.n_rows == per_context.sum()
    assert split.n_train_rows == per_context[:7].sum()
    assert split.n_sae_rows == per_context[:4].sum()
    assert split.sae_train_rows == slice(0, split.n_sae_rows)
    assert split.fit_rows == slice(split.n_sae_rows, split.n_train_rows)
    assert split.test_rows == slice(split.n_train_rows, split.n_rows)
    assert split.test_contexts() == slice(7, 10)
    assert split.test_contexts(2) == slice(7, 9)
    assert split.test_contexts(100) == slice(7, 10)
    # The same object from the raw Zarr group, as stages that open a store read it.
    assert RowSplit.of(zarr.open_group(tokens.path, mode="r")) == split


def test_without_reserved_sae_rows_saes_train_on_every_train_row(tmp_path):
    split = _token_store(tmp_path, sae_fraction=0.0).split
    assert split.n_sae_rows == 0
    assert split.sae_train_rows == split.train_rows == slice(0, split.n_train_rows)
    assert split.fit_rows == slice(0, split.n_train_rows)


def test_a_store_without_the_split_names_itself(tmp_path):
    array = zarr.create_array(tmp_path / "old.zarr", shape=(4, 2), dtype="float32")
    array.attrs.update({"n_rows": 4, "n_train_rows": 3})
    with pytest.raises(ValueError, match=r"old\.zarr.*n_sae_rows"):
        RowSplit.of(array)


def test_inconsistent_counts_are_refused():
    with pytest.raises(ValueError, match="n_sae_rows <= n_train_rows"):
        RowSplit(n_rows=10, n_train_rows=4, n_sae_rows=6, n_contexts=2, n_train_contexts=1, n_sae_contexts=1)
