"""SAE input conventions from the SAE's own metadata (pipeline.sae_inference._input_conventions).

A pretrained SAE saved in sae-lens's format records how its model was loaded in
`metadata.model_from_pretrained_kwargs`. The GPT-2 SAEs of gpt2-small-res-jb (and the other
releases the directory marks `center_writing_weights: true`) saw TransformerLens's GPT-2 with its
writing weights centred: residual-stream activations (and mlp_out) are the HF model's minus their
per-token mean. On a tiny random GPT-2 loaded into TransformerLens that way, from the same local
weights, the project (HF activations through InferenceSAE) must give what sae-lens gives on
TransformerLens's activations: the SAE's input, its latents, the error x - x_hat, and the KL and
CE of splicing x_hat in. Trained SAEs of the project (no such metadata) are untouched, and
conventions the pipeline cannot follow are errors that name the file and the key.

Tolerances (float32), relative to the largest |value| of the reference unless said otherwise,
against the largest errors measured over all cases (torch 2.13, CPU): SAE inputs 6.0e-7, latents
1.2e-6, SAE errors x - x_hat 1.3e-6, activations under TL's processing flags 1.2e-6 (all asserted
at 1e-5); spliced KL 5.6e-7 absolute (asserted at 2e-6), spliced CE 2.6e-7 (asserted at 2e-6).
Without the centring, the SAE inputs and latents are off by more than 1e-2 (asserted).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from pipeline.config import Hook
from pipeline.models import load_model
from pipeline.sae_config import SaeSetConfig
from pipeline.sae_inference import InferenceSAE, encode_decode, load_sae
from pipeline.saes import build_training_sae, save_sae
from pipeline.splice import PrefixCache, token_kl_and_ce
from tests.tl_models import VOCAB, save_tiny_model, tl_activation, tl_model

# sae-lens warns, on loading an SAE with model_from_pretrained_kwargs, to load the model with them: these tests do.
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings(r"ignore:\s*This SAE has non-empty model_from_pretrained_kwargs:UserWarning")]

LAYER = 1
SITES = ("resid_pre", "resid_post", "mlp_out", "attn_z")
D_SAE = 256
RTOL = 1e-5  # activations, latents, errors: relative to the largest |value| (measured: module docstring)
KL_ATOL = 2e-6  # KL per token, absolute: float32 rounding of log-probs of |value| up to ~9
CE_RTOL = 2e-6
# The flags TransformerLens's from_pretrained applies by default (sae-lens loads with all off, then
# the SAE's model_from_pretrained_kwargs): HookedTransformer.load_and_process_state_dict's names.
FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases", "refactor_factored_attn_matrices")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """The project's HF GPT-2 and token ids (BOS first)."""
    hf = load_model(save_tiny_model("gpt2", tmp_path_factory.mktemp("gpt2") / "model"), "float32")
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 0
    return hf, ids


@pytest.fixture(scope="module")
def tl_models(gpt2):
    """TransformerLens GPT-2s of the same weights, by processing: none (sae-lens's starting point),
    center_writing_weights (gpt2-small-res-jb's metadata), and that with fold_ln (TL's from_pretrained default)."""
    hf, _ = gpt2
    return {"none": tl_model(hf), "centred": tl_model(hf, center_writing_weights=True),
            "centred+fold_ln": tl_model(hf, center_writing_weights=True, fold_ln=True)}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    error = relative_error(actual, expected)
    assert error <= rtol, f"{what}: max error {error:.2e} of the largest |value|; tolerance {rtol:.0e}"


def pretrained_style_sae(path, architecture: str, hook: Hook, x_tl: torch.Tensor, normalize: str = "none",
                         kwargs: dict | None = None, seed: int = 0) -> SAE:
    """A sae-lens inference SAE at `hook`, as a pretrained one is saved (save_model), with
    metadata like gpt2-small-res-jb's; weights fitted loosely to what it would have been trained
    on (`x_tl`, TransformerLens's activation (B, T, d)) so that it reconstructs something and fires sparsely."""
    gen = torch.Generator().manual_seed(seed)
    d_in = x_tl.shape[-1]
    metadata = SAEMetadata(hook_name=hook.name, model_name="tiny-gpt2", prepend_bos=True, hook_head_index=None,
                           model_from_pretrained_kwargs={"center_writing_weights": True} if kwargs is None else kwargs)
    common = dict(d_in=d_in, d_sae=D_SAE, normalize_activations=normalize, metadata=metadata,
                  reshape_activations="hook_z" if hook.site == "attn_z" else "none")
    sae = TopKSAE(TopKSAEConfig(k=16, **common)) if architecture == "topk" else StandardSAE(StandardSAEConfig(**common))
    rows = x_tl.reshape(-1, d_in)
    if normalize == "constant_norm_rescale":  # what the SAE sees
        rows = rows * d_in**0.5 / rows.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(D_SAE, d_in, generator=gen) * rows.std() / 4)
        sae.W_enc.copy_(sae.W_dec.T / sae.W_dec.norm(dim=-1) ** 2)
        sae.b_dec.copy_(rows.mean(0))
        pre = (rows - sae.b_dec) @ sae.W_enc
        # ~20% of tokens fire each latent; off every data point (the BOS rows repeat, and quantiles land on them)
        sae.b_enc.copy_(-pre.quantile(0.8, dim=0) - 0.05 * pre.std(0))
    save_sae(sae, path)  # the project's writer: save_model for an inference SAE
    return SAE.load_from_disk(path)


def _tl_spliced_kl_and_ce(tl, ids, name: str, replace) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        clean = tl(ids).float().log_softmax(-1)
        logits = tl.run_with_hooks(ids, fwd_hooks=[(name, lambda act, hook: replace(act))]).float()
    kl = F.kl_div(logits.log_softmax(-1), clean, log_target=True, reduction="none").sum(-1)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(ids.shape[0], -1)
    return kl, ce


@pytest.mark.parametrize("processing", ["centred", "centred+fold_ln"])
@pytest.mark.parametrize("architecture,normalize", [("standard", "none"), ("topk", "none"), ("standard", "constant_norm_rescale")])
@pytest.mark.parametrize("site", SITES)
def test_centred_sae_matches_sae_lens_on_transformer_lens(tmp_path, gpt2, tl_models, site, architecture, normalize, processing):
    hf, ids = gpt2
    tl, hook = tl_models[processing], Hook(site, LAYER)
    cache = PrefixCache(hf, hook)
    cache.run(ids)
    x = cache.activation  # the pipeline's activation (as harvest stores it)
    _, tl_cache = tl.run_with_cache(ids, names_filter=[hook.name])
    x_tl = tl_activation(tl_cache, hook.name)
    reference = pretrained_style_sae(tmp_path / "sae", architecture, hook, x_tl, normalize)
    sae = load_sae(tmp_path / "sae")
    residual = site != "attn_z"
    assert sae.cfg.center_input is residual  # hook_z reads the stream through a LayerNorm: TL leaves it alone
    if residual:
        assert relative_error(x, x_tl) > 1e-2, "the test model's activations should have a sizeable mean"

    # (a) the SAE's input, from the HF activation, is TransformerLens's activation
    assert_close(sae.sae_input(x), x_tl, f"{hook.name} SAE input")
    # (b) its latents are sae-lens's on TransformerLens's activation (hook_z given as sae-lens takes it)
    tl_in = tl_cache[hook.name]
    with torch.no_grad():
        ref_latents = reference.encode(tl_in)
        ref_x_hat = reference.decode(ref_latents).reshape(x.shape)
    latents, x_hat = encode_decode(sae, x)
    assert 0.02 < (ref_latents > 0).float().mean() < 0.5
    assert torch.equal(latents > 0, ref_latents > 0), f"{hook.name}: different latents fire"
    assert_close(latents, ref_latents, f"{hook.name} latents")
    # ... and the error x - x_hat is sae-lens's error in TransformerLens's space
    assert_close(x - x_hat, x_tl - ref_x_hat, f"{hook.name} SAE error")
    if residual:  # the naive reading (HF activations straight in) is far off: what the metadata fixes
        weights = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
        naive = InferenceSAE(dataclasses.replace(sae.cfg, center_input=False), weights)
        assert relative_error(naive.encode(x), ref_latents) > 1e-2

    # (c) splicing the project's x_hat into the HF model = splicing sae-lens's into TransformerLens
    kl, ce = token_kl_and_ce(cache.clean_logprobs, cache.splice(x_hat), ids)

    def replace(act):
        return reference.decode(reference.encode(act))

    kl_tl, ce_tl = _tl_spliced_kl_and_ce(tl, ids, hook.name, replace)
    assert kl_tl[:, 1:].min() > 1e-4, "the SAE should change the prediction"
    kl_error = (kl - kl_tl).abs().max().item()
    assert kl_error <= KL_ATOL, f"{hook.name} spliced KL: max |error| {kl_error:.2e}; tolerance {KL_ATOL:.0e}"
    assert_close(ce[:, :-1], ce_tl, f"{hook.name} spliced CE", rtol=CE_RTOL)


@pytest.mark.parametrize("flag", FLAGS)
def test_which_transformer_lens_flags_change_the_sites(gpt2, tl_models, flag):
    """What _input_conventions assumes of each flag, measured: center_writing_weights changes the
    residual sites by their per-token mean only; fold_value_biases changes hook_z by -b_V exactly;
    refactor_factored_attn_matrices changes hook_z otherwise; fold_ln and center_unembed change no
    site. None changes the log-probs. (TL refuses to refactor a rotary model, so GPT-2 only.)"""
    hf, ids = gpt2
    processed = tl_model(hf, **{flag: True})
    names = [Hook(site, LAYER).name for site in SITES]
    logits, cache = tl_models["none"].run_with_cache(ids, names_filter=names)
    processed_logits, processed_cache = processed.run_with_cache(ids, names_filter=names)
    assert_close(processed_logits.log_softmax(-1), logits.log_softmax(-1), f"{flag}: log-probs")
    for name in names:
        x, y = tl_activation(cache, name), tl_activation(processed_cache, name)
        if flag == "center_writing_weights" and not name.endswith("hook_z"):
            x = x - x.mean(-1, keepdim=True)
        if flag == "fold_value_biases" and name.endswith("hook_z"):
            x = x - hf.transformer.h[LAYER].attn.c_attn.bias[-x.shape[-1]:]  # b_V, heads x d_head
        if flag == "refactor_factored_attn_matrices" and name.endswith("hook_z"):
            assert relative_error(y, x) > 1e-2, name
            continue
        assert_close(y, x, f"{flag}: {name}")


def _trained_sae(tmp_path, metadata: dict | None = None):
    """An SAE as the project's train_sae stage saves it (its metadata: hook_name, model_name, prepend_bos)."""
    sae = build_training_sae(SaeSetConfig(architecture="topk", k=8, widths=[D_SAE]), 64, D_SAE, "float32", "cpu")
    with torch.no_grad():
        for param in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    for key, value in {"hook_name": f"blocks.{LAYER}.hook_resid_post", "model_name": "tiny", "prepend_bos": True, **(metadata or {})}.items():
        sae.cfg.metadata[key] = value
    save_sae(sae, tmp_path / "sae")
    return tmp_path / "sae"


@pytest.mark.parametrize("metadata", [None, {"model_from_pretrained_kwargs": {"center_writing_weights": False}}, {"model_from_pretrained_kwargs": {}}],
                         ids=["project", "center_writing_weights_false", "empty_kwargs"])
def test_sae_without_centring_is_unchanged(tmp_path, metadata):
    """No centring metadata: encode/decode are sae-lens's, bit for bit (as before the conventions existed)."""
    path = _trained_sae(tmp_path, metadata)
    sae, reference = load_sae(path), SAE.load_from_disk(path)
    assert sae.cfg.center_input is False
    x = 2 * torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(3)) + 1
    assert torch.equal(sae.sae_input(x), x)
    latents, x_hat = encode_decode(sae, x)
    with torch.no_grad():
        assert torch.equal(latents, reference.encode(x))
        assert torch.equal(x_hat, reference.decode(latents))


def test_decode_needs_the_encode_of_a_centred_sae(tmp_path, gpt2, tl_models):
    _, ids = gpt2
    hook = Hook("resid_post", LAYER)
    _, tl_cache = tl_models["centred"].run_with_cache(ids, names_filter=[hook.name])
    pretrained_style_sae(tmp_path / "sae", "standard", hook, tl_cache[hook.name])
    sae = load_sae(tmp_path / "sae")
    latents = sae.encode(torch.randn(5, 64))
    sae.decode(latents)
    with pytest.raises(RuntimeError, match="center_input: decode adds back the mean"):
        sae.decode(latents)  # the mean was used up by the first decode


def test_hook_z_sae_takes_the_pipelines_flat_z(tmp_path, gpt2, tl_models):
    """A hook_z SAE (reshape_activations: hook_z) on z as the pipeline stores it, (..., heads*d_head):
    the same latents as on (..., heads, d_head), and x_hat flat."""
    _, ids = gpt2
    hook = Hook("attn_z", LAYER)
    _, tl_cache = tl_models["none"].run_with_cache(ids, names_filter=[hook.name])
    pretrained_style_sae(tmp_path / "sae", "topk", hook, tl_activation(tl_cache, hook.name), kwargs={})
    sae = load_sae(tmp_path / "sae")
    z = tl_cache[hook.name]  # (B, T, heads, d_head)
    latents, x_hat = encode_decode(sae, z)
    flat_latents, flat_x_hat = encode_decode(sae, z.flatten(-2))
    assert x_hat.shape == z.shape and flat_x_hat.shape == z.flatten(-2).shape
    assert torch.equal(flat_latents, latents) and torch.equal(flat_x_hat, x_hat.flatten(-2))


@pytest.mark.parametrize(
    "hook_name,edit,key",
    [
        ("blocks.1.hook_resid_post", {"prepend_bos": False}, "metadata.prepend_bos=False"),
        ("blocks.1.attn.hook_z", {"hook_head_index": 2}, "metadata.hook_head_index=2"),
        ("blocks.1.attn.hook_z", {"model_from_pretrained_kwargs": {"fold_value_biases": True}},
         "metadata.model_from_pretrained_kwargs.fold_value_biases=True"),
        ("blocks.1.attn.hook_z", {"model_from_pretrained_kwargs": {"refactor_factored_attn_matrices": True}},
         "metadata.model_from_pretrained_kwargs.refactor_factored_attn_matrices=True"),
        ("blocks.1.hook_resid_post", {"model_from_pretrained_kwargs": {"checkpoint_index": 3}},
         "metadata.model_from_pretrained_kwargs.checkpoint_index=3"),
        (None, {"model_from_pretrained_kwargs": {"center_writing_weights": True}}, "metadata.hook_name=None"),
    ],
    ids=["no_bos", "one_head", "fold_value_biases_z", "refactor_z", "unknown_kwarg", "centring_without_hook_name"],
)
def test_unsupported_conventions_are_clear_errors(tmp_path, hook_name, edit, key):
    path = _trained_sae(tmp_path)
    cfg_file = path / "cfg.json"
    raw = json.loads(cfg_file.read_text())
    raw["metadata"] = {**raw["metadata"], "hook_name": hook_name, **edit}
    cfg_file.write_text(json.dumps(raw))
    with pytest.raises(ValueError) as error:
        load_sae(path)
    assert str(cfg_file) in str(error.value) and key in str(error.value), str(error.value)


@pytest.mark.parametrize(
    "hook_name,kwargs,centred",
    [
        ("blocks.1.hook_resid_post", {"fold_ln": True, "center_unembed": True, "dtype": "float32"}, False),
        ("blocks.1.hook_mlp_out", {"center_writing_weights": True, "fold_ln": True, "fold_value_biases": True,
                                   "refactor_factored_attn_matrices": True}, True),
        ("blocks.1.attn.hook_z", {"center_writing_weights": True, "fold_ln": True}, False),
    ],
    ids=["neutral_flags", "residual_site_all_flags", "hook_z_centring"],
)
def test_conventions_that_change_nothing_are_accepted(tmp_path, hook_name, kwargs, centred):
    path = _trained_sae(tmp_path, {"hook_name": hook_name, "model_from_pretrained_kwargs": kwargs})
    assert load_sae(path).cfg.center_input is centred


def test_synthetic_grid_runs_a_centred_sae_and_masks_in_its_space(tmp_path, gpt2, tl_models):
    """pipeline.synthetic decodes masked latents: each decode gets its own encode, so a centred
    SAE's mean is the one of the rows it decodes (train and test alike)."""
    from pipeline.analysis_config import SyntheticConfig
    from pipeline.synthetic import _decode_masked, run_grid

    _, ids = gpt2
    hook = Hook("resid_post", LAYER)
    _, tl_cache = tl_models["centred"].run_with_cache(ids, names_filter=[hook.name])
    pretrained_style_sae(tmp_path / "sae", "standard", hook, tl_cache[hook.name])
    sae = load_sae(tmp_path / "sae")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 64, generator=g) + torch.linspace(-3, 3, 40)[:, None]  # rows with different means
    mask = (torch.rand(D_SAE, generator=g) > 0.3).float()
    centred = sae.sae_input(x)
    in_sae_space = load_sae(tmp_path / "sae")  # the same SAE, told its input is already centred
    in_sae_space.cfg = dataclasses.replace(in_sae_space.cfg, center_input=False)
    expected = in_sae_space.decode(in_sae_space.encode(centred) * mask) + (x - centred)  # decoded in its space, mean back
    assert_close(_decode_masked(sae, x, mask), expected, "masked decode")
    cfg = SyntheticConfig(hooks=[hook.name], widths=[D_SAE], activation_noise=[0.0, 0.1], introduced_noise=[0.0],
                          masked_fraction=[0.0, 0.25])
    points = run_grid(sae, x[:30].numpy(), x[30:].numpy(), cfg)
    assert len(points) == 4 and all(math.isfinite(p.linear_fvu) for p in points)


@pytest.mark.parametrize("metadata", [
    {"hook_name": "blocks.1.hook_resid_pre", "model_from_pretrained_kwargs": {"center_writing_weights": True}},
    {"hook_name": "blocks.1.hook_mlp_out", "model_from_pretrained_kwargs": {"center_writing_weights": True}},
    {"hook_name": "blocks.1.attn.hook_z", "model_from_pretrained_kwargs": {"center_writing_weights": True}},
    {"hook_name": "blocks.1.hook_resid_pre", "model_from_pretrained_kwargs": {"center_writing_weights": False}},
    {"hook_name": "blocks.1.hook_resid_pre", "model_class_name": "AutoModelForCausalLM",
     "model_from_pretrained_kwargs": {"center_writing_weights": True}},
    {"hook_name": "blocks.1.hook_resid_pre"},
])
def test_the_torch_free_centring_answer_equals_the_loaders(tmp_path, metadata):
    """pipeline.sae_centring (for numpy-only stages) answers as pipeline.sae_inference does."""
    from pipeline.sae_centring import RESIDUAL_WRITING_HOOKS, takes_centred_input
    from pipeline.sae_inference import RESIDUAL_WRITING_HOOKS as LOADERS, read_sae_config

    _trained_sae(tmp_path, metadata)
    assert RESIDUAL_WRITING_HOOKS == LOADERS
    assert takes_centred_input(tmp_path / "sae") == read_sae_config(tmp_path / "sae").center_input
