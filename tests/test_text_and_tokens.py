"""Corpus cleaning, context building and the seeded train/test split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DataConfig, TokensConfig
from pipeline.text import clean_document, pydoc_documents
from pipeline.tokens import content_hash, scored_mask, split_train_first, token_stream_contexts

DOC = """Customizing attribute access
****************************

The following methods can be defined to customize the meaning of
attribute access for class instances.

   >>> class C:
   ...     x = 1

        for key, value in sorted(mapping.items()):
            result[key] = value

x = {k: v[0] for (k, v) in d.items() if v and k != '_'}

Short heading

The following methods can be defined to customize the meaning of
attribute access for class instances.
"""


def test_clean_document_keeps_prose_once_and_reflows_it():
    seen: set[str] = set()
    cleaned = clean_document(DOC, DataConfig(), seen)
    assert (
        cleaned
        == "The following methods can be defined to customize the meaning of attribute access for class instances."
    )
    # Across documents too: the same paragraph elsewhere is a duplicate.
    assert (
        clean_document(
            "The following methods can be defined to customize the meaning of\nattribute access for class instances.",
            DataConfig(),
            seen,
        )
        == ""
    )


def test_pydoc_corpus_is_large_clean_and_seeded():
    docs = pydoc_documents(DataConfig(), seed=0)
    assert len(docs) > 3000 and sum(map(len, docs)) > 500_000
    assert not any(">>>" in d for d in docs)
    paragraphs = [p for d in docs for p in d.split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs))
    assert pydoc_documents(DataConfig(), seed=0) == docs
    assert pydoc_documents(DataConfig(), seed=1) != docs


@pytest.mark.slow
def test_contexts_start_with_bos_and_separate_documents(lm_repo):
    from pipeline.models import load_tokenizer

    tokenizer = load_tokenizer(lm_repo / "artifacts/model")
    docs = [
        "Return the number of items.",
        "Close the file.",
        "Raise an error when the queue is full and no slot frees up in time.",
    ]
    cfg = TokensConfig(context_length=8, n_contexts=3, skip_positions=0)
    contexts = token_stream_contexts(iter(docs), tokenizer, cfg, bos_id=0, source="three docs")
    assert contexts.shape == (3, 8)
    assert (contexts[:, 0] == 0).all()
    expected = [t for d in docs for t in tokenizer(d, add_special_tokens=False)["input_ids"] + [0]]
    assert contexts[:, 1:].reshape(-1).tolist() == expected[:21]


def test_split_is_by_context_seeded_and_train_first():
    contexts = np.arange(40 * 4, dtype=np.int32).reshape(40, 4)
    cfg = TokensConfig(context_length=4, n_contexts=40, skip_positions=1, test_fraction=0.25, seed=3)
    ordered, n_train = split_train_first(contexts, cfg)
    assert n_train == 30
    assert sorted(map(tuple, ordered.tolist())) == sorted(map(tuple, contexts.tolist()))
    again, _ = split_train_first(contexts, cfg)
    assert np.array_equal(again, ordered)
    other, _ = split_train_first(
        contexts, TokensConfig(context_length=4, n_contexts=40, skip_positions=1, test_fraction=0.25, seed=4)
    )
    assert not np.array_equal(other[n_train:], ordered[n_train:])
    assert content_hash(ordered, n_train, 1, 0) != content_hash(other, n_train, 1, 0)


@pytest.mark.parametrize("skip,first", [(0, 1), (1, 1), (16, 16)])
def test_bos_is_never_scored(skip, first):
    cfg = TokensConfig(context_length=32, skip_positions=skip)
    assert cfg.first_scored_position == first


def test_separators_and_skipped_positions_have_no_rows():
    contexts = np.array([[0, 5, 6, 0, 7, 8], [0, 0, 9, 9, 0, 1]], dtype=np.int32)
    mask = scored_mask(contexts, first_scored=2, bos_id=0)
    assert mask.tolist() == [[False, False, True, False, True, True], [False, False, True, True, False, True]]
