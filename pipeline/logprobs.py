"""Log-probabilities, KL and next-token CE from logits (B, T, V), a few positions at a time.

A float32 (B, T, V) tensor is 1 GiB for 8 x 128 tokens of Gemma's 262,144-token vocabulary. The
functions here convert and normalise the model's logits one block of positions at a time: beyond
their inputs and outputs, they hold a few float32 temporaries of one block (`CHUNK_ELEMENTS`
values, 64 MiB, each), whatever the vocabulary's size. Every operation is per position, so the results are
the same, bit for bit, as on the whole tensor (tests/test_logprobs.py).
"""

from __future__ import annotations

from typing import Iterator

import torch

CHUNK_ELEMENTS = 1 << 24


def position_chunks(shape: torch.Size, chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    """Slices of the position axis of a (B, T, V) tensor, each at most `chunk_elements` in size
    (at least one position)."""
    batch, length, vocab = shape
    step = max(1, chunk_elements // (batch * vocab))
    for start in range(0, length, step):
        yield slice(start, min(start + step, length))


def log_softmax_float32(logits: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """log_softmax over the vocabulary, in float32, of logits (B, T, V) of any dtype."""
    out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    for positions in position_chunks(logits.shape, chunk_elements):
        out[:, positions] = torch.log_softmax(logits[:, positions].float(), dim=-1)
    return out


def next_token_losses(logits: torch.Tensor, input_ids: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """-log P(token t+1 | tokens <= t) at every position t (B, T) float32; NaN at the last position."""
    losses = torch.full(input_ids.shape, float("nan"), dtype=torch.float32, device=logits.device)
    for positions in position_chunks(logits.shape, chunk_elements):
        logprobs = torch.log_softmax(logits[:, positions].float(), dim=-1)
        _write_next_token_losses(losses, logprobs, positions, input_ids)
    return losses


def kl_and_next_token_losses(
    clean_logprobs: torch.Tensor, logits: torch.Tensor, input_ids: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position (B, T): KL(P_clean || P) summed over the vocabulary, with P = softmax(logits),
    and P's next-token loss (`next_token_losses`)."""
    kl = torch.empty(input_ids.shape, dtype=torch.float32, device=logits.device)
    losses = torch.full(input_ids.shape, float("nan"), dtype=torch.float32, device=logits.device)
    for positions in position_chunks(logits.shape, chunk_elements):
        logprobs = torch.log_softmax(logits[:, positions].float(), dim=-1)
        clean = clean_logprobs[:, positions]
        kl[:, positions] = torch.einsum("btv,btv->bt", clean.exp(), clean - logprobs)
        _write_next_token_losses(losses, logprobs, positions, input_ids)
    return kl, losses


def _write_next_token_losses(losses: torch.Tensor, logprobs: torch.Tensor, positions: slice, input_ids: torch.Tensor) -> None:
    """Fill losses[:, positions] from the chunk's log-probabilities, except the sequence's last position."""
    stop = min(positions.stop, input_ids.shape[1] - 1)
    if stop <= positions.start:
        return
    targets = input_ids[:, positions.start + 1 : stop + 1, None]
    losses[:, positions.start : stop] = -logprobs[:, : stop - positions.start].gather(-1, targets)[..., 0]
