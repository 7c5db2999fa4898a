"""Corpus cleaning, context building and the seeded train/test split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, DataConfig, TokensConfig
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


def test_docstrings_corpus_adds_installed_packages_deduplicated_and_seeded():
    from pipeline.text import docstring_documents, package_docstrings

    cfg = DataConfig(name="docstrings", source="docstrings", packages=["omegaconf"])
    pydoc = pydoc_documents(DataConfig(), seed=0)
    docs = docstring_documents(cfg, seed=0)
    assert len(docs) > len(pydoc)
    paragraphs = [p for d in docs for p in d.split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs))
    # Every pydoc paragraph is still there; the package adds paragraphs of its own docstrings.
    assert set(p for d in pydoc for p in d.split("\n\n")) <= set(paragraphs)
    added = set(paragraphs) - set(p for d in pydoc for p in d.split("\n\n"))
    assert added and any("OmegaConf" in p or "config" in p.lower() for p in added)
    assert any("Create a" in doc or "config" in doc.lower() for doc in package_docstrings(["omegaconf"]))


def test_docstrings_corpus_names_a_missing_package_and_an_empty_list():
    from pipeline.text import docstring_documents

    with pytest.raises(ConfigError, match=r"data\.packages: 'no_such_package_xyz' is not an installed package"):
        docstring_documents(DataConfig(name="d", source="docstrings", packages=["no_such_package_xyz"]), seed=0)
    with pytest.raises(ConfigError, match=r"data\.packages: name at least one"):
        DataConfig(name="d", source="docstrings", packages=[])


@pytest.mark.slow
def test_corpus_statistics_count_tokens_duplicates_and_sample(lm_repo):
    from pipeline.models import load_tokenizer
    from pipeline.text import corpus_statistics, docstring_documents

    cfg = DataConfig(name="docstrings", source="docstrings", packages=["omegaconf"])
    tokenizer = load_tokenizer(lm_repo / "artifacts/model")
    stats = corpus_statistics(cfg, tokenizer, sample=3)
    docs = docstring_documents(cfg, seed=0)
    assert stats["documents"] == len(docs) and stats["characters"] == sum(map(len, docs))
    assert stats["tokens"] == sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in docs)
    assert stats["dropped_duplicates"] > 0 and stats["dropped_not_prose"] > 0
    kept = sum(len(d.split("\n\n")) for d in docs)
    assert stats["paragraphs"] == kept + stats["dropped_duplicates"] + stats["dropped_not_prose"]
    assert len(stats["sample"]) == 3 and all(s in docs for s in stats["sample"])
