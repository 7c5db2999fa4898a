"""An SAE's weights read straight from sae-lens's on-disk format (`sae_weights.safetensors`) with
numpy: for analyses that need the decoder but never run the SAE (no torch, no sae-lens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open

WEIGHTS_FILE = "sae_weights.safetensors"


def read_decoder(sae_dir: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(W_dec (d_sae, d_in), b_dec (d_in,)) in float64."""
    path = Path(sae_dir) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; not an SAE in sae-lens format (run the train_sae stage)")
    try:
        with safe_open(str(path), framework="numpy") as weights:
            return weights.get_tensor("W_dec").astype(np.float64), weights.get_tensor("b_dec").astype(np.float64)
    except (TypeError, ValueError, KeyError) as exc:  # e.g. bfloat16, which numpy cannot hold
        raise ValueError(f"{path}: cannot read W_dec and b_dec as numpy arrays ({exc}); "
                         "save the SAE in float32 or float16") from exc
