"""An SAE's decoder read straight from sae-lens's on-disk format (`sae_weights.safetensors`) with
numpy: for analyses that need the decoder but never run the SAE (no torch, no sae-lens)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import ConfigError

WEIGHTS_FILE = "sae_weights.safetensors"
_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def read_decoder(sae_dir: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(W_dec (d_sae, d_in), b_dec (d_in,)) in float64, from float64/32/16 or bfloat16 weights."""
    path = Path(sae_dir) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; not an SAE in sae-lens format (run the train_sae stage)")
    # The safetensors layout: an 8-byte little-endian header size, a JSON header, then the data.
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
        return tuple(_read_tensor(handle, 8 + header_size, header, name, path) for name in ("W_dec", "b_dec"))


def check_fits(sae_d_in: int, sae_d_sae: int, d_in: int, width: int | None, key: str) -> None:
    """Raise a ConfigError naming `key` unless an SAE of shape (sae_d_in, sae_d_sae) reads `d_in`-wide
    activations (and has `width` latents)."""
    if sae_d_in != d_in:
        raise ConfigError(f"{key}: the SAE's d_in is {sae_d_in}, but the hook's activations have width {d_in}")
    if width is not None and sae_d_sae != width:
        raise ConfigError(f"{key}: the SAE has {sae_d_sae} latents, where {width} are expected")


def _read_tensor(handle, data_start: int, header: dict, name: str, path: Path) -> np.ndarray:
    if name not in header:
        raise ValueError(f"{path}: no tensor {name!r}; not an SAE in sae-lens format")
    info = header[name]
    start, end = info["data_offsets"]
    handle.seek(data_start + start)
    raw = handle.read(end - start)
    if info["dtype"] == "BF16":  # numpy has no bfloat16: it is the top half of a float32's bits
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif info["dtype"] in _NUMPY_DTYPES:
        values = np.frombuffer(raw, dtype=_NUMPY_DTYPES[info["dtype"]])
    else:
        raise ValueError(f"{path}: {name} is {info['dtype']}; expected one of {['BF16', *_NUMPY_DTYPES]}")
    return values.reshape(info["shape"]).astype(np.float64)
