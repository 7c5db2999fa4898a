"""Encode and decode with an SAE saved in sae-lens's format, without importing sae-lens.

`import sae_lens` takes ~6 s (it pulls in transformer_lens), which dominates stages that only
run an SAE forward. This module reads the same files (`cfg.json` + `sae_weights.safetensors`, as
written by `save_inference_model` / `save_model` and `pipeline.saes.save_sae`) with torch and
safetensors alone, and redoes the inference arithmetic of `sae_lens.SAE.load_from_disk(path)`
operation for operation, so the results agree to float32 rounding (in practice bit for bit).

sae-lens stays the trainer, the format and the reference: tests/test_sae_inference.py builds
SAEs of every architecture and normalization with sae-lens and holds the two equal. Whatever this
module does not reproduce (other architectures, pre-6.0 configs, unknown weights) it refuses with
an error naming the file and key, rather than guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeline.sae_files import WEIGHTS_FILE, check_fits

CFG_FILE = "cfg.json"

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "torch.float32": torch.float32,
    "torch.float64": torch.float64,
    "torch.float16": torch.float16,
    "torch.bfloat16": torch.bfloat16,
}
ARCHITECTURES = ("standard", "topk", "jumprelu")
# At inference sae-lens applies only the two run-time modes; "expected_average_only_in" and
# "covariance_whitening" are identity there (the trainer folds them into the weights on save).
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm", "covariance_whitening")
RESHAPES = ("none", "hook_z")
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class InferenceConfig:
    """The cfg.json fields inference needs; defaults are sae-lens's (SAEConfig, TopKSAEConfig)."""

    architecture: str
    d_in: int
    d_sae: int
    dtype: str = "float32"
    device: str = "cpu"
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    reshape_activations: str = "none"
    k: int = 100  # topk only
    rescale_acts_by_decoder_norm: bool = False  # topk only
    metadata: dict = field(default_factory=dict, compare=False)


class InferenceSAE:
    """An SAE for encode/decode only: plain tensors, no autograd, no hooks."""

    def __init__(self, cfg: InferenceConfig, weights: dict[str, torch.Tensor]):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.W_enc, self.b_enc = weights["W_enc"], weights["b_enc"]
        self.W_dec, self.b_dec = weights["W_dec"], weights["b_dec"]
        self.threshold = weights.get("threshold")  # jumprelu only
        # Run-time state, as sae-lens keeps it: d_head from the first hook_z input, and the
        # normalization statistics of the last encode, which the next decode undoes.
        self._d_head: int | None = None
        self._norm_stats: tuple[torch.Tensor, ...] | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents (..., d_sae)."""
        x = x.to(self.dtype)
        if self.cfg.reshape_activations == "hook_z":  # (..., n_heads, d_head) -> (..., d_in)
            if self._d_head is None:
                self._d_head = x.shape[-1]
            x = x.flatten(-2)
        x = self._normalize_in(x)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        hidden_pre = x @ self.W_enc + self.b_enc
        if self.cfg.architecture == "standard":
            return hidden_pre.relu()
        if self.cfg.architecture == "jumprelu":
            return hidden_pre.relu() * (hidden_pre > self.threshold).to(hidden_pre.dtype)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        values, indices = torch.topk(hidden_pre, k=self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(hidden_pre).scatter_(-1, indices, values.relu())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Reconstruction x_hat (..., d_in), or (..., n_heads, d_head) for a hook_z SAE."""
        if self.cfg.architecture == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            latents = latents * (1 / self.W_dec.norm(dim=-1))
        x_hat = self._normalize_out(latents @ self.W_dec + self.b_dec)
        if self.cfg.reshape_activations == "hook_z":
            if self._d_head is None:
                raise RuntimeError("hook_z SAE: decode needs d_head, which the first encode records; encode first")
            x_hat = x_hat.unflatten(-1, (-1, self._d_head))
        return x_hat

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def _normalize_in(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = (self.cfg.d_in**0.5) / x.norm(dim=-1, keepdim=True)
            self._norm_stats = (coeff,)
            return x * coeff
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            x = x - mu
            std = x.std(dim=-1, keepdim=True)
            self._norm_stats = (mu, std)
            return x / (std + LAYER_NORM_EPS)
        return x

    def _normalize_out(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.cfg.normalize_activations
        if mode not in ("constant_norm_rescale", "layer_norm"):
            return x
        if self._norm_stats is None:
            raise RuntimeError(
                f"normalize_activations={mode!r}: decode undoes the normalization of the input of the "
                "last encode (as sae-lens does), and there is none pending; call encode first, once per decode"
            )
        stats, self._norm_stats = self._norm_stats, None
        if mode == "constant_norm_rescale":
            return x / stats[0]
        mu, std = stats
        return x * std + mu  # sae-lens undoes with std, not std + eps


@torch.no_grad()
def encode_decode(sae: InferenceSAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    latents = sae.encode(x)
    return latents, sae.decode(latents)


def load_sae(path: Path | str, device: str = "cpu") -> InferenceSAE:
    path = Path(path)
    cfg_file = path / CFG_FILE
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path}: no cfg.json; not an SAE in sae-lens format (run the train_sae stage)")
    cfg = _read_config(cfg_file, str(device))
    return InferenceSAE(cfg, _read_weights(path / WEIGHTS_FILE, cfg))


def _unsupported(cfg_file: Path, key: str, value, supported, why: str = "") -> ValueError:
    return ValueError(f"{cfg_file}: {key}={value!r} is not supported{why}; supported: {list(supported)}")


def _read_config(cfg_file: Path, device: str) -> InferenceConfig:
    raw = json.loads(cfg_file.read_text())
    metadata = raw.get("metadata") or {}
    version = raw.get("sae_lens_version") or metadata.get("sae_lens_version")
    major = str(version).split(".")[0]
    if not version or not major.isdigit() or int(major) < 6:
        raise _unsupported(cfg_file, "metadata.sae_lens_version", version, [">=6"],
                           " (an older sae-lens format: load and re-save it with sae-lens >= 6)")
    architecture = raw.get("architecture")
    if architecture not in ARCHITECTURES:
        why = (" (a batchtopk training checkpoint; sae-lens saves BatchTopK SAEs for inference as 'jumprelu': "
               "save with save_inference_model / pipeline.saes.save_sae)" if architecture == "batchtopk" else "")
        raise _unsupported(cfg_file, "architecture", architecture, ARCHITECTURES, why)
    for key in ("d_in", "d_sae"):
        if not isinstance(raw.get(key), int) or raw[key] < 1:
            raise _unsupported(cfg_file, key, raw.get(key), ["a positive integer"])
    for key, allowed in (("dtype", DTYPES), ("normalize_activations", NORMALIZATIONS), ("reshape_activations", RESHAPES)):
        if key in raw and raw[key] not in allowed:
            raise _unsupported(cfg_file, key, raw[key], allowed)
    fields = {"architecture", "d_in", "d_sae", "dtype", "apply_b_dec_to_input", "normalize_activations", "reshape_activations"}
    if architecture == "topk":
        fields |= {"k", "rescale_acts_by_decoder_norm"}
    cfg = InferenceConfig(**{key: raw[key] for key in fields if key in raw}, device=device, metadata=metadata)
    if architecture == "topk" and not (isinstance(cfg.k, int) and 1 <= cfg.k <= cfg.d_sae):
        raise _unsupported(cfg_file, "k", cfg.k, [f"an integer in [1, d_sae={cfg.d_sae}]"])
    return cfg


def _read_weights(weights_file: Path, cfg: InferenceConfig) -> dict[str, torch.Tensor]:
    dtype = DTYPES[cfg.dtype]
    weights = {name: t.to(dtype) for name, t in load_file(weights_file, device=cfg.device).items()}
    # sae-lens drops an all-ones "scaling_factor" (written by some older versions) and cannot load another.
    if "scaling_factor" in weights and torch.allclose(weights["scaling_factor"], torch.ones_like(weights["scaling_factor"])):
        del weights["scaling_factor"]
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    if cfg.architecture == "jumprelu":
        shapes["threshold"] = (cfg.d_sae,)
    if set(weights) != set(shapes):
        raise ValueError(f"{weights_file}: has tensors {sorted(weights)}; a {cfg.architecture} SAE has {sorted(shapes)}")
    for name, shape in shapes.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{weights_file}: {name} has shape {tuple(weights[name].shape)}; cfg.json (d_in={cfg.d_in}, d_sae={cfg.d_sae}) says {shape}")
    return weights


def check_sae_fits(sae, d_in: int, width: int | None, key: str) -> None:
    """`check_fits` for a loaded SAE (an InferenceSAE or a sae-lens SAE)."""
    check_fits(sae.cfg.d_in, sae.cfg.d_sae, d_in, width, key)
