"""The LM's own per-token loss on every scored token (a baseline feature for error-norm probes).

Row-aligned with the activation stores; NaN on the rows reserved for SAE training (no
analysis reads the LM loss there). For row i (a token at position p of its context):
- `loss_current[i]` = -log P(token_p | tokens_<p): how surprising the token itself was;
- `loss_next[i]`    = -log P(token_p+1 | tokens_<=p): the loss of the prediction made at p
  (NaN at a context's last position, which has no next token).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.logprobs import next_token_losses
from pipeline.models import load_model
from pipeline.store_integrity import new_group, publish
from pipeline.tokens import TokenStore


@torch.no_grad()
def token_losses(model, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids -> (loss_current, loss_next), each (B, T) float32, NaN where undefined."""
    following = next_token_losses(model(input_ids=contexts, use_cache=False).logits, contexts)  # token t+1's loss at t
    nan = torch.full_like(following[:, :1], float("nan"))
    return torch.cat([nan, following[:, :-1]], dim=1), following


def write_lm_loss(
    model_dir: Path, token_store: Path, out: Path, batch_size: int, device: str, compute_dtype: str = "float32", progress: bool = True
) -> None:
    tokens = TokenStore.open(token_store)
    model = load_model(model_dir, compute_dtype, device)
    skipped = np.full(tokens.n_sae_rows, np.nan, dtype=np.float32)
    current, following = [skipped], [skipped]
    for start in tqdm(range(tokens.n_sae_contexts, tokens.n_contexts, batch_size), desc="lm_loss", disable=not progress):
        stop = min(start + batch_size, tokens.n_contexts)
        ids = torch.from_numpy(tokens.contexts[start:stop]).long().to(device)
        cur, nxt = token_losses(model, ids)
        mask = torch.from_numpy(tokens.mask[start:stop]).to(device)
        current.append(cur[mask].cpu().numpy())
        following.append(nxt[mask].cpu().numpy())
    out = Path(out)
    tmp, group = new_group(out)
    for name, parts in (("loss_current", current), ("loss_next", following)):
        values = np.concatenate(parts).astype(np.float32)
        group.create_array(name, data=values, chunks=(max(1, len(values)),))
    group.attrs.update({"token_store_hash": tokens.content_hash, **tokens.split.as_attrs()})
    publish(tmp, out)
