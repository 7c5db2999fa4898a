"""Fault 3: an empty or short input fails at once, saying why, instead of producing 0 rows (and
then hanging in an endless batch loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.activation_store import iter_row_blocks, open_store
from pipeline.config import ConfigError
from pipeline.models import load_tokenizer
from pipeline.saes import shuffled_batches
from pipeline.tokens import check_scored_rows, scored_mask
from tests.faults.stores import ROWS, write_store

pytestmark = pytest.mark.faults


def test_a_model_directory_without_its_tokenizer_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match=rf"{tmp_path}: no tokenizer files .*tokenizer.json.*dvc repro -f -s model"):
        load_tokenizer(tmp_path)


def test_a_broken_tokenizer_file_is_named(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match=rf"{tmp_path}: its tokenizer does not load"):
        load_tokenizer(tmp_path)


def test_contexts_of_separators_only_fail_with_the_likely_causes():
    """What a tokenizer that yields no tokens gives: every position is a document separator."""
    contexts = np.zeros((10, 32), dtype=np.int32)
    with pytest.raises(ConfigError, match=r"only 0 of 240 scored positions hold a token.*tokenizer yields no tokens"):
        check_scored_rows(scored_mask(contexts, 8, bos_id=0), 8, n_train=8, n_sae=4, source="empty")


def test_a_split_without_scored_tokens_names_the_keys():
    contexts = np.ones((10, 32), dtype=np.int32)
    contexts[8:, 8:] = 0  # the test contexts hold separators only
    with pytest.raises(ConfigError, match="the test contexts have no scored token; raise tokens.n_contexts"):
        check_scored_rows(scored_mask(contexts, 8, bos_id=0), 8, n_train=8, n_sae=4, source="x")


def test_real_text_passes():
    contexts = np.arange(1, 321, dtype=np.int32).reshape(10, 32)
    contexts[:, 0] = 0
    check_scored_rows(scored_mask(contexts, 8, bos_id=0), 8, n_train=8, n_sae=4, source="x")


def test_fewer_rows_than_one_batch_raise_instead_of_looping_forever(tmp_path):
    store = open_store(write_store(tmp_path / "s.zarr"))
    with pytest.raises(ValueError, match=r"s.zarr: 10 training rows are fewer than one batch of 16 \(train_sae.batch_size\)"):
        next(shuffled_batches(store, 10, 16, shuffle_chunks=2, seed=0))
    with pytest.raises(ValueError, match=r"s.zarr: no rows to read in \[96, 96\)"):
        next(iter_row_blocks(store, ROWS))


def test_a_resumed_batch_stream_continues_exactly_where_it_stopped(tmp_path):
    """The stream train_sae resumes from a checkpoint: skipping k batches (without reading them)
    gives batches k, k+1, ... of the full stream, across epochs and shuffle buffers."""
    store = open_store(write_store(tmp_path / "s.zarr", chunk=8))
    full = shuffled_batches(store, 90, 7, shuffle_chunks=3, seed=5)
    reference = [next(full) for _ in range(60)]  # 90 rows: several epochs, odd carries
    for skip in (0, 1, 5, 12, 13, 29, 41):
        resumed = shuffled_batches(store, 90, 7, shuffle_chunks=3, seed=5, skip_batches=skip)
        for expected in reference[skip : skip + 8]:
            torch.testing.assert_close(next(resumed), expected, rtol=0, atol=0)


def test_a_missing_store_names_the_stage_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the `harvest` stage"):
        open_store(tmp_path / "absent.zarr")
