"""pipeline.sae_inference against sae-lens: same encode/decode for every architecture and option,
no sae-lens import, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sae_lens import SAE

from pipeline.sae_config import SaeSetConfig
from pipeline.sae_inference import encode_decode, load_sae
from pipeline.saes import build_training_sae, save_sae
from tests.conftest import REPO

D_IN, D_SAE, K = 48, 192, 12
N_HEADS, D_HEAD = 4, 12
ARCHITECTURES = ["topk", "batchtopk", "jumprelu", "standard"]
# (normalize_activations, folded): folded modes are what sae-lens's trainer (and pipeline.saes.train_sae)
# saves; unfolded, the mode stays in cfg.json, where sae-lens ignores it at inference.
NORMALIZATIONS = [
    ("none", False),
    ("expected_average_only_in", True),
    ("expected_average_only_in", False),
    ("constant_norm_rescale", False),
    ("layer_norm", False),
    ("covariance_whitening", True),
    ("covariance_whitening", False),
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(gen: torch.Generator, n: int) -> torch.Tensor:
    """Rows like residual activations: a shared offset, unequal norms (~10-100)."""
    offset = 3 * torch.randn(D_IN, generator=torch.Generator().manual_seed(7))
    x = 4 * torch.randn(n, D_IN, generator=gen) + offset
    return x * (0.3 + 1.7 * torch.rand(n, 1, generator=gen))


def _training_sae(architecture: str, normalize: str, apply_b_dec: bool = True, dtype: str = "float32"):
    cfg = SaeSetConfig(architecture=architecture, k=K, widths=[D_SAE], normalize_activations=normalize)
    sae = build_training_sae(cfg, D_IN, D_SAE, dtype, "cpu")
    sae.cfg.apply_b_dec_to_input = apply_b_dec
    return sae


@torch.no_grad()
def _randomize(sae, architecture: str, x_train: torch.Tensor, gen: torch.Generator) -> None:
    """Random weights with biases, unequal decoder norms and thresholds that let some latents fire;
    `x_train` is what this training SAE sees (scaled or whitened, when the trainer does that)."""
    sae.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=gen) / D_IN**0.5)
    sae.W_dec.copy_(torch.randn(D_SAE, D_IN, generator=gen) * (0.5 + 1.5 * torch.rand(D_SAE, 1, generator=gen)) / D_IN**0.5)
    sae.b_dec.copy_(x_train.mean(0) + 0.2 * x_train.std() * torch.randn(D_IN, generator=gen))
    sae.b_enc.zero_()
    hidden_pre = sae.encode_with_hidden_pre(x_train.to(sae.dtype))[1].float()
    sae.b_enc.copy_(0.5 * hidden_pre.std(0) * torch.randn(D_SAE, generator=gen))
    hidden_pre = sae.encode_with_hidden_pre(x_train.to(sae.dtype))[1].float()
    if architecture == "standard":
        sae.b_enc.sub_(hidden_pre.quantile(0.7, dim=0).to(sae.dtype))
    elif architecture == "topk":  # ~5% positive per latent: many rows have fewer than k, so the ReLU matters
        norms = sae.W_dec.norm(dim=-1).float() if sae.cfg.rescale_acts_by_decoder_norm else 1.0
        sae.b_enc.sub_((hidden_pre.quantile(0.95, dim=0) / norms).to(sae.dtype))
    elif architecture == "jumprelu":
        sae.threshold.copy_(hidden_pre.relu().quantile(0.7, dim=0) * (0.5 + torch.rand(D_SAE, generator=gen)))
    elif architecture == "batchtopk":
        sae.topk_threshold.fill_(hidden_pre.relu().quantile(0.9).item())


def _whitening(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov((x - mean).T))
    return mean, vectors @ torch.diag(values**-0.5) @ vectors.T, vectors @ torch.diag(values**0.5) @ vectors.T


def _build(architecture, normalize, folded, apply_b_dec=True, dtype="float32", seed=0):
    """A training SAE as the project would save it, and test inputs."""
    gen = torch.Generator().manual_seed(seed)
    x_cal, x_test = _data(gen, 512), _data(gen, 128)
    sae = _training_sae(architecture, normalize, apply_b_dec, dtype)
    if normalize == "expected_average_only_in" and folded:
        scaling_factor = (D_IN**0.5 / x_cal.norm(dim=-1).mean()).item()
        _randomize(sae, architecture, x_cal * scaling_factor, gen)
        sae.fold_activation_norm_scaling_factor(scaling_factor)
    elif normalize == "covariance_whitening" and folded:
        mean, whiten, unwhiten = _whitening(x_cal)
        _randomize(sae, architecture, (x_cal - mean) @ whiten, gen)
        sae.fold_activation_whitening(mean, whiten, unwhiten)
    else:
        _randomize(sae, architecture, x_cal, gen)
    return sae, x_test


def _saved_copies(sae, tmp_path) -> tuple[SAE, list]:
    """The reference (sae-lens's load of what save_sae wrote) and every way the format gets written."""
    save_sae(sae, tmp_path / "save_sae")  # the project's way: save_inference_model, keys sorted
    sae.save_inference_model(tmp_path / "save_inference_model")
    reference = SAE.load_from_disk(tmp_path / "save_sae")
    save_sae(reference, tmp_path / "resaved")  # an inference SAE (as pretrained ones are): save_model
    return reference, [tmp_path / name for name in ("save_sae", "save_inference_model", "resaved")]


def _assert_agree(reference: SAE, path, x: torch.Tensor) -> None:
    sae = load_sae(path)
    names = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if reference.cfg.architecture() == "jumprelu" else [])
    for name in names:
        ref_param, param = getattr(reference, name).detach(), getattr(sae, name)
        assert (param.shape, param.dtype, param.device) == (ref_param.shape, ref_param.dtype, ref_param.device), name
        assert torch.equal(param, ref_param), name
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.architecture) == (D_IN, D_SAE, reference.cfg.architecture())
    assert (sae.device, sae.dtype) == (reference.device, reference.dtype)

    with torch.no_grad():
        ref_latents = reference.encode(x)
        ref_x_hat = reference.decode(ref_latents)
        latents = sae.encode(x)
        x_hat = sae.decode(ref_latents)  # decode checked on the very same latents
    active = ref_latents != 0
    assert 0 < active.float().mean() < 0.9, "the test SAE should fire some latents, not all"
    assert torch.equal(latents != 0, active)
    scale = x.abs().max().item()
    torch.testing.assert_close(latents, ref_latents, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(x_hat, ref_x_hat, rtol=1e-5, atol=1e-5 * scale)
    both = encode_decode(sae, x)
    torch.testing.assert_close(both[0], ref_latents, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(both[1], ref_x_hat, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("apply_b_dec", [True, False], ids=["b_dec_in", "no_b_dec_in"])
@pytest.mark.parametrize("normalize,folded", NORMALIZATIONS, ids=[f"{n}{'-folded' if f else ''}" for n, f in NORMALIZATIONS])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_matches_sae_lens(tmp_path, architecture, normalize, folded, apply_b_dec):
    sae, x = _build(architecture, normalize, folded, apply_b_dec)
    reference, paths = _saved_copies(sae, tmp_path)
    assert reference.cfg.apply_b_dec_to_input is apply_b_dec
    assert reference.cfg.normalize_activations == ("none" if folded else normalize)
    for path in paths:
        _assert_agree(reference, path, x)
    _assert_agree(reference, paths[0], x.reshape(4, -1, D_IN))  # more than one leading dimension


@pytest.mark.parametrize("rescale", [True, False])
def test_topk_decoder_norm_rescaling_matches_sae_lens(tmp_path, rescale):
    """save_inference_model leaves unit decoder norms, which hide rescale_acts_by_decoder_norm;
    an inference TopK SAE re-saved with other norms (save_model) shows it."""
    sae, x = _build("topk", "none", folded=False)
    save_sae(sae, tmp_path / "unit_norms")
    reference = SAE.load_from_disk(tmp_path / "unit_norms")
    reference.cfg.rescale_acts_by_decoder_norm = rescale
    with torch.no_grad():
        reference.W_dec.mul_(0.2 + 3 * torch.rand(D_SAE, 1, generator=torch.Generator().manual_seed(1)))
    save_sae(reference, tmp_path / "sae")
    reference = SAE.load_from_disk(tmp_path / "sae")
    assert reference.cfg.rescale_acts_by_decoder_norm is rescale
    _assert_agree(reference, tmp_path / "sae", x)


@pytest.mark.parametrize("normalize", ["none", "layer_norm"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_hook_z_matches_sae_lens(tmp_path, architecture, normalize):
    """A pretrained attn.hook_z SAE re-saved by the project: (..., n_heads, d_head) in and out."""
    sae, x = _build(architecture, normalize, folded=False)
    sae.cfg.reshape_activations = "hook_z"
    sae.cfg.metadata.hook_name = "blocks.0.attn.hook_z"
    reference, paths = _saved_copies(sae, tmp_path)
    x = x.reshape(-1, N_HEADS, D_HEAD)
    assert reference.decode(reference.encode(x)).shape == x.shape
    _assert_agree(reference, paths[0], x)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bfloat16_matches_sae_lens(tmp_path, architecture):
    sae, x = _build(architecture, "none", folded=False, dtype="bfloat16")
    reference, paths = _saved_copies(sae, tmp_path)
    assert reference.dtype == torch.bfloat16
    _assert_agree(reference, paths[0], x)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_numpy_decoder_reader_matches_sae_lens(tmp_path, dtype):
    """pipeline.sae_files.read_decoder (numpy only: the analyses that need the decoder but run no SAE)."""
    from pipeline.sae_files import read_decoder

    sae, _ = _build("topk", "expected_average_only_in", folded=True, dtype=dtype)
    save_sae(sae, tmp_path / "sae")
    reference = SAE.load_from_disk(tmp_path / "sae")
    W_dec, b_dec = read_decoder(tmp_path / "sae")
    assert W_dec.dtype == b_dec.dtype == np.float64
    np.testing.assert_array_equal(W_dec, reference.W_dec.detach().double().numpy())
    np.testing.assert_array_equal(b_dec, reference.b_dec.detach().double().numpy())


def test_import_leaves_sae_lens_out():
    code = "import sys, pipeline.sae_inference; print([m for m in ('sae_lens', 'transformer_lens', 'transformers') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_missing_cfg_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing here: no cfg.json"):
        load_sae(tmp_path / "nothing here")


@pytest.mark.parametrize(
    "key,value,hint",
    [
        ("architecture", "gated", "'jumprelu'"),
        ("architecture", "batchtopk", "save_inference_model"),
        ("normalize_activations", "per_token", "'layer_norm'"),
        ("reshape_activations", "hook_q", "'hook_z'"),
        ("dtype", "int8", "'bfloat16'"),
    ],
)
def test_unsupported_config_is_a_clear_error(tmp_path, key, value, hint):
    save_sae(_training_sae("jumprelu", "none"), tmp_path / "sae")
    cfg_file = tmp_path / "sae" / "cfg.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), key: value}))
    with pytest.raises(ValueError) as error:
        load_sae(tmp_path / "sae")
    message = str(error.value)
    assert str(cfg_file) in message and f"{key}={value!r}" in message and hint in message, message


def test_weights_not_matching_the_architecture_is_a_clear_error(tmp_path):
    save_sae(_training_sae("jumprelu", "none"), tmp_path / "sae")
    cfg_file = tmp_path / "sae" / "cfg.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "architecture": "standard"}))
    with pytest.raises(ValueError, match=r"sae_weights.safetensors: has tensors .*'threshold'"):
        load_sae(tmp_path / "sae")
