"""Which torch device a config value names (no transformers, no sae-lens: cheap to import)."""

from __future__ import annotations

import torch

from pipeline.config import ConfigError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(device: str, key: str) -> torch.device:
    """The torch device for the config value `device` at config key `key` (named in errors):
    'auto' is CUDA when present, else Apple's MPS, else the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{key}: {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', 'mps')") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {device!r} asked for, but torch sees no CUDA device; use 'auto' or 'cpu'")
    if resolved.type == "mps" and not _mps_available():
        raise ConfigError(f"{key}: {device!r} asked for, but torch sees no MPS device; use 'auto' or 'cpu'")
    return resolved
