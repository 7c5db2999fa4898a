"""Text -> fixed-length contexts (BOS first) -> a Zarr token store with a train/test split.

Layout of the store (a Zarr group):
- `contexts` (n_contexts, context_length) int32: train contexts first, then test contexts;
- `rows/context`, `rows/position`, `rows/token` (n_rows,) int32: the token index. Row i of
  every activation store is the token at (context, position); only scored tokens have rows:
  positions >= first_scored_position whose token is not the BOS/document separator (in many
  LMs, e.g. SmolLM2, that token carries activations hundreds of times larger than any other,
  which would swamp every variance-weighted metric). Rows [0, n_train_rows) are train tokens,
  the rest test tokens; of the train rows, [0, n_sae_rows) train SAEs and [n_sae_rows,
  n_train_rows) train the dark-matter fits (see `tokens.sae_fraction` and `pipeline.row_split`).
- attrs: sizes, the split, the BOS id, the source, and `content_hash`, which activation stores
  record so that a store can be matched to the tokens it was computed from.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.config import ConfigError, DataConfig, TokensConfig
from pipeline.row_split import RowSplit
from pipeline.store_integrity import new_group, open_checked, publish

TOKENIZE_BATCH = 256


def bos_token_id(tokenizer, bos_token: str | None) -> int:
    """The id that starts each context and separates documents."""
    if bos_token is not None:
        token_id = tokenizer.convert_tokens_to_ids(bos_token)
        if token_id is None or token_id == tokenizer.unk_token_id and bos_token != tokenizer.unk_token:
            raise ConfigError(f"model.bos_token: {bos_token!r} is not a token of this tokenizer")
        return int(token_id)
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ConfigError("model.bos_token: the tokenizer has neither a BOS nor an EOS token; name one in model.bos_token")


def token_stream_contexts(
    documents: Iterable[str], tokenizer, cfg: TokensConfig, bos_id: int, source: str
) -> np.ndarray:
    """Concatenate tokenised documents (separated by BOS) and cut (n_contexts, context_length) rows."""
    body = cfg.context_length - 1
    needed = cfg.n_contexts * body
    stream: list[int] = []
    n_documents = 0
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(bos_id)
        batch.clear()

    for text in documents:
        n_documents += 1
        batch.append(text)
        if len(batch) == TOKENIZE_BATCH:
            flush()
            if len(stream) >= needed:
                break
    if batch:
        flush()
    if n_documents == 0:
        raise ConfigError(f"data ({source}): the corpus is empty; no document had any text")
    if len(stream) < needed:
        available = len(stream) // body
        raise ConfigError(
            f"tokens.n_contexts: {cfg.n_contexts} contexts of {cfg.context_length} tokens need {needed} tokens, but "
            f"data ({source}) gave only {len(stream)} ({available} contexts); lower tokens.n_contexts or use a larger corpus"
        )
    contexts = np.asarray(stream[:needed], dtype=np.int32).reshape(cfg.n_contexts, body)
    return np.concatenate([np.full((cfg.n_contexts, 1), bos_id, dtype=np.int32), contexts], axis=1)


def split_train_first(contexts: np.ndarray, cfg: TokensConfig) -> tuple[np.ndarray, int]:
    """Seeded split by context; returns the contexts reordered train-first and the train count."""
    order = np.random.default_rng(cfg.seed).permutation(len(contexts))
    test = np.sort(order[: cfg.n_test_contexts])
    train = np.setdiff1d(np.arange(len(contexts)), test)
    return np.concatenate([contexts[train], contexts[test]]), len(train)


def content_hash(contexts: np.ndarray, n_train: int, first_scored: int, bos_id: int, n_sae: int = 0) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(contexts, dtype=np.int32).tobytes())
    digest.update(f"{contexts.shape}|{n_train}|{first_scored}|{bos_id}|{n_sae}".encode())
    return digest.hexdigest()[:16]


def scored_mask(contexts: np.ndarray, first_scored: int, bos_id: int) -> np.ndarray:
    """(n_contexts, T) bool: which tokens have rows (see the module docstring)."""
    mask = contexts != bos_id
    mask[:, :first_scored] = False
    return mask


MIN_TOKEN_SHARE = 0.5
"""Below this share of real tokens among the scored positions (the rest being document
separators), the documents average under two tokens: the text or the tokenizer is broken."""


def check_scored_rows(mask: np.ndarray, first_scored: int, n_train: int, n_sae: int, source: str) -> None:
    """Fail, saying why, when the contexts give fewer scored rows than the configuration asks
    for: every split needs rows, and most scored positions must hold a token, not a separator."""
    positions = mask.shape[0] * (mask.shape[1] - first_scored)
    scored = int(mask.sum())
    if scored < MIN_TOKEN_SHARE * positions:
        raise ConfigError(
            f"tokens: only {scored} of {positions} scored positions hold a token; the rest are document separators, "
            f"so data ({source}) gives documents of under two tokens each. The corpus is empty or nearly so, the "
            f"tokenizer yields no tokens for it, or data.min_words filters out nearly everything"
        )
    splits = {"SAE training": mask[:n_sae], "analysis fitting": mask[n_sae:n_train], "test": mask[n_train:]}
    for name, rows in splits.items():
        if len(rows) and not rows.any():
            raise ConfigError(
                f"tokens: the {name} contexts have no scored token; raise tokens.n_contexts or tokens.context_length, "
                f"or lower tokens.skip_positions"
            )
    if not splits["test"].any():
        raise ConfigError("tokens: no test contexts; raise tokens.test_fraction or tokens.n_contexts")


@dataclass(frozen=True)
class TokenStore:
    """Read side of a token store."""

    path: Path
    contexts: np.ndarray
    first_scored_position: int
    content_hash: str
    bos_token_id: int
    split: RowSplit
    """Which rows and contexts train SAEs, fit the analyses, or are test (pipeline.row_split)."""

    @property
    def n_train_contexts(self) -> int:
        return self.split.n_train_contexts

    @property
    def n_sae_contexts(self) -> int:
        return self.split.n_sae_contexts

    @property
    def n_contexts(self) -> int:
        return len(self.contexts)

    @cached_property
    def mask(self) -> np.ndarray:
        return scored_mask(self.contexts, self.first_scored_position, self.bos_token_id)

    @cached_property
    def context_row_starts(self) -> np.ndarray:
        """(n_contexts + 1,): the rows of context c are [starts[c], starts[c + 1])."""
        return np.concatenate([[0], np.cumsum(self.mask.sum(axis=1))]).astype(np.int64)

    @property
    def n_rows(self) -> int:
        return self.split.n_rows

    @property
    def n_train_rows(self) -> int:
        return self.split.n_train_rows

    @property
    def n_sae_rows(self) -> int:
        return self.split.n_sae_rows

    @staticmethod
    def open(path: Path | str) -> "TokenStore":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: token store missing; run the `tokens` stage first (dvc repro tokens)")
        group = open_checked(path)
        attrs = dict(group.attrs)
        return TokenStore(
            path=path,
            contexts=group["contexts"][:],
            first_scored_position=int(attrs["first_scored_position"]),
            content_hash=str(attrs["content_hash"]),
            bos_token_id=int(attrs["bos_token_id"]),
            split=RowSplit.from_attrs(attrs, str(path)),
        )


def write_token_store(
    out: Path,
    contexts: np.ndarray,
    n_train: int,
    tokens_cfg: TokensConfig,
    data_cfg: DataConfig,
    bos_id: int,
    model_name: str,
    n_sae: int = 0,
) -> TokenStore:
    """Write the store to a temporary sibling and rename it into place (never half-written)."""
    out = Path(out)
    first = tokens_cfg.first_scored_position
    n_ctx, length = contexts.shape
    mask = scored_mask(contexts, first, bos_id)
    check_scored_rows(mask, first, n_train, n_sae, data_cfg.name)
    rows_context, rows_position = np.nonzero(mask)  # row-major: context, then position
    rows_token = contexts[mask]
    digest = content_hash(contexts, n_train, first, bos_id, n_sae)

    tmp, group = new_group(out)
    group.create_array("contexts", data=contexts, chunks=contexts.shape)
    rows = group.create_group("rows")
    for name, values in (("context", rows_context), ("position", rows_position), ("token", rows_token)):
        rows.create_array(name, data=np.ascontiguousarray(values, dtype=np.int32), chunks=(max(1, len(values)),))
    group.attrs.update(
        {
            "content_hash": digest,
            "n_contexts": n_ctx,
            "n_train_contexts": n_train,
            "context_length": length,
            "first_scored_position": first,
            "n_rows": int(len(rows_token)),
            "n_train_rows": int(mask[:n_train].sum()),
            "n_sae_contexts": n_sae,
            "n_sae_rows": int(mask[:n_sae].sum()),
            "bos_token_id": bos_id,
            "model": model_name,
            "tokens": asdict(tokens_cfg),
            "data": asdict(data_cfg),
            "python": sys.version.split()[0],
        }
    )
    publish(tmp, out)
    return TokenStore.open(out)
