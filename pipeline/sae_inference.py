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

Input conventions. The pipeline feeds an SAE the activations of the HuggingFace model, which
equal TransformerLens's unprocessed ones (tests/test_transformer_lens_parity.py). A pretrained
SAE records in cfg.json's `metadata` how its model was loaded; where that changes what the SAE
expects, `_input_conventions` either adapts (centring, see InferenceSAE) or refuses by key:
- model_from_pretrained_kwargs.center_writing_weights at a hook that writes to the residual
  stream (gpt2-small-res-jb and the other GPT-2 SAEs trained on TransformerLens's default GPT-2):
  the SAE sees x minus its per-token mean, and x_hat gets that mean back (InferenceSAE);
- model_from_pretrained_kwargs.fold_value_biases / refactor_factored_attn_matrices at attn.hook_z
  (they change z; at the residual sites they change nothing): an error;
- model_from_pretrained_kwargs.fold_ln / center_unembed: change no value at the pipeline's sites
  (fold_ln moves the norms' gains and biases into the weights that read the normalised stream;
  center_unembed shifts each token's logits by a constant): accepted, as are keys that only say
  how to load (dtype, device, ...); any other key is an error;
- prepend_bos false (the pipeline's contexts always start with BOS), hook_head_index set (an SAE
  of one head's z; the pipeline's attn_z has all heads): errors.
Project-trained SAEs have none of these keys, and their arithmetic is untouched.
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
# TransformerLens's center_writing_weights centres every weight that writes to the residual stream
# (W_E, W_pos, W_O, b_O, W_out, b_out): the stream and every output added to it are then the HF
# model's minus their mean over d_model. Hooks that read the stream (attn.hook_z, mlp.hook_post,
# ...) sit behind a LayerNorm, which removes that mean anyway, and are unchanged. TransformerLens
# centres LayerNorm models only (it skips RMSNorm ones, e.g. Llama, Gemma): every pretrained SAE
# with the flag is a GPT-2 one, and this module cannot tell the model's norm from the SAE.
RESIDUAL_WRITING_HOOKS = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
                          "hook_attn_out", "hook_mlp_out", "hook_result")
# model_from_pretrained_kwargs that change attn.hook_z (the residual sites stay as they are):
# fold_value_biases moves b_V into b_O (patterns sum to 1), so TL's z is HF's minus b_V per head;
# refactor_factored_attn_matrices re-factors W_V W_O per head. Neither can be redone from z alone.
Z_CHANGING_KWARGS = ("fold_value_biases", "refactor_factored_attn_matrices")
# ...that change no value at any site the pipeline captures (see the module docstring), or only say how to load.
NEUTRAL_KWARGS = ("fold_ln", "center_unembed", "dtype", "torch_dtype", "device", "n_devices", "move_to_device",
                  "default_prepend_bos", "default_padding_side", "trust_remote_code", "first_n_layers", "n_ctx")


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
    center_input: bool = False  # not a cfg.json field: from the metadata (_input_conventions)


class InferenceSAE:
    """An SAE for encode/decode only: plain tensors, no autograd, no hooks.

    With `cfg.center_input` (an SAE trained on TransformerLens's GPT-2 with center_writing_weights,
    at a residual-stream hook), `encode(x)` takes the pipeline's (HF) activation x and feeds the SAE
    `sae_input(x)` = x - x.mean(-1, keepdim=True), which is TransformerLens's activation there; it
    remembers the removed mean, and the next `decode` adds it back to the SAE's output. x_hat is
    thus in the pipeline's space (it splices into the HF model as TL's x_hat does into TL's), and
    x - x_hat is the error in TransformerLens's space. Like the run-time normalizations, this
    pairs each decode with the encode before it.
    """

    def __init__(self, cfg: InferenceConfig, weights: dict[str, torch.Tensor]):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.W_enc, self.b_enc = weights["W_enc"], weights["b_enc"]
        self.W_dec, self.b_dec = weights["W_dec"], weights["b_dec"]
        self.threshold = weights.get("threshold")  # jumprelu only
        # Run-time state of the last encode, which the next decode uses: d_head of a hook_z input
        # given as (..., n_heads, d_head), the normalization statistics, and the mean removed by centring.
        self._d_head: int | None = None
        self._norm_stats: tuple[torch.Tensor, ...] | None = None
        self._removed_mean: torch.Tensor | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents (..., d_sae)."""
        if self.cfg.reshape_activations == "hook_z":
            # (..., n_heads, d_head) as sae-lens takes it; the pipeline stores z flat (..., d_in), heads x d_head
            # head-major as sae-lens flattens it, and then x_hat stays flat too.
            self._d_head = x.shape[-1] if x.shape[-1] != self.cfg.d_in else None
        x, self._removed_mean = self._sae_space(x)
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
        if self.cfg.center_input:
            if self._removed_mean is None:
                raise RuntimeError("center_input: decode adds back the mean that the last encode removed, and there is "
                                   "none pending; call encode first, once per decode")
            x_hat, self._removed_mean = x_hat + self._removed_mean, None
        if self.cfg.reshape_activations == "hook_z" and self._d_head is not None:
            x_hat = x_hat.unflatten(-1, (-1, self._d_head))
        return x_hat

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def sae_input(self, x: torch.Tensor) -> torch.Tensor:
        """The activation as the SAE was trained on it, from the pipeline's: x flattened (hook_z) and,
        with `cfg.center_input`, centred; before the SAE's own normalization."""
        return self._sae_space(x)[0]

    def _sae_space(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(sae_input(x), the mean it removed or None)."""
        x = x.to(self.dtype)
        if self.cfg.reshape_activations == "hook_z" and x.shape[-1] != self.cfg.d_in:
            x = x.flatten(-2)
        if not self.cfg.center_input:
            return x, None
        mean = x.mean(dim=-1, keepdim=True)
        return x - mean, mean

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
    cfg = read_sae_config(path, device)
    return InferenceSAE(cfg, _read_weights(Path(path) / WEIGHTS_FILE, cfg))


def read_sae_config(path: Path | str, device: str = "cpu") -> InferenceConfig:
    """The SAE's configuration (cfg.json, checked, with its input conventions), without its weights."""
    cfg_file = Path(path) / CFG_FILE
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path}: no cfg.json; not an SAE in sae-lens format (run the train_sae stage)")
    return _read_config(cfg_file, str(device))


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
    cfg = InferenceConfig(**{key: raw[key] for key in fields if key in raw}, device=device, metadata=metadata,
                          center_input=_input_conventions(cfg_file, metadata))
    if architecture == "topk" and not (isinstance(cfg.k, int) and 1 <= cfg.k <= cfg.d_sae):
        raise _unsupported(cfg_file, "k", cfg.k, [f"an integer in [1, d_sae={cfg.d_sae}]"])
    return cfg


def _input_conventions(cfg_file: Path, metadata: dict) -> bool:
    """Whether the SAE takes centred inputs; an error for a convention the pipeline cannot follow
    (the module docstring lists them)."""
    if metadata.get("prepend_bos", True) is False:
        raise _unsupported(cfg_file, "metadata.prepend_bos", False, [True],
                           " (the SAE was trained without a BOS token; the pipeline's contexts always start with one)")
    if metadata.get("hook_head_index") is not None:
        raise _unsupported(cfg_file, "metadata.hook_head_index", metadata["hook_head_index"], [None],
                           " (an SAE of one attention head; the pipeline's attn.hook_z holds every head)")
    kwargs = metadata.get("model_from_pretrained_kwargs") or {}
    if (metadata.get("model_class_name") or "HookedTransformer") != "HookedTransformer":
        return False  # kwargs of another loader (e.g. transformers' own): the HF model's activations, unprocessed
    hook_name = metadata.get("hook_name")
    hook = str(hook_name).rsplit(".", 1)[-1]
    for key, value in kwargs.items():
        prefix = f"metadata.model_from_pretrained_kwargs.{key}"
        if key in Z_CHANGING_KWARGS and value and hook == "hook_z":
            raise _unsupported(cfg_file, prefix, value, [False], f" at {hook_name} (TransformerLens's {key} changes "
                               "attn.hook_z in a way the pipeline cannot redo from the HF model's z)")
        if key not in (*Z_CHANGING_KWARGS, *NEUTRAL_KWARGS, "center_writing_weights"):
            raise _unsupported(cfg_file, prefix, value, ["absent"],
                               " (a TransformerLens loading option this module does not know to leave the activations alone)")
    if not kwargs.get("center_writing_weights"):
        return False
    if not hook_name:
        raise _unsupported(cfg_file, "metadata.hook_name", hook_name, ["a TransformerLens hook name"],
                           " (needed with model_from_pretrained_kwargs.center_writing_weights: it centres residual-stream hooks only)")
    return hook in RESIDUAL_WRITING_HOOKS


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
