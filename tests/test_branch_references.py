"""Branches the smoke configuration never reaches, each against an independent computation on
small data made here: every SAE architecture's training, latent-vs-probe against numpy/scipy,
and the LM's per-token loss against torch's cross_entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from scipy.stats import rankdata

from pipeline.row_split import RowSplit
from pipeline.sae_config import SaeSetConfig, TrainSaeConfig
from pipeline.saes import train_sae

D, ATOMS, ACTIVE, ROWS = 16, 24, 2, 6144


def planted_sparse_store(seed: int = 0) -> zarr.Array:
    """Rows that are exactly sparse in a planted dictionary (ACTIVE of ATOMS atoms per row, positive
    coefficients) plus an offset, with a row split recorded as harvest records it."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(ATOMS, D))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((ROWS, ATOMS))
    for row in range(ROWS):
        codes[row, rng.choice(ATOMS, ACTIVE, replace=False)] = rng.uniform(1.0, 3.0, ACTIVE)
    x = (codes @ atoms + 0.5).astype(np.float32)
    store = zarr.create_array(store={}, shape=x.shape, chunks=(512, D), dtype="float32")
    store[:] = x
    split = RowSplit(n_rows=ROWS, n_train_rows=5120, n_sae_rows=4096, n_contexts=12, n_train_contexts=10, n_sae_contexts=8)
    store.attrs.update(split.as_attrs())
    return store


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = x.astype(np.float64), x_hat.astype(np.float64)
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


ARCHITECTURES = {
    # architecture: (settings, FVU bound on held-out rows after 150 steps; measured 0.08, 0.08, 0.013, 0.015)
    "topk": ({"k": 4}, 0.12),
    "batchtopk": ({"k": 4}, 0.12),
    "standard": ({"l1_coefficient": 0.05}, 0.05),
    "jumprelu": ({"l0_coefficient": 0.01, "jumprelu_init_threshold": 0.001}, 0.05),
}


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_learns_a_planted_dictionary(architecture):
    settings, bound = ARCHITECTURES[architecture]
    store = planted_sparse_store()
    split = RowSplit.of(store)
    cfg = SaeSetConfig(hooks=["blocks.0.hook_resid_post"], widths=[48], architecture=architecture, **settings)
    train = TrainSaeConfig(tokens=128 * 150, batch_size=128, lr=4e-3, log_every=10, device="cpu", shuffle_chunks=4)
    sae, curve = train_sae(store, split.sae_train_rows.stop, 48, cfg, train, {}, progress=False)
    held_out = store[split.test_rows]
    with torch.no_grad():
        latents = sae.encode(torch.from_numpy(held_out))
        x_hat = sae.decode(latents).numpy()
    test_fvu = fvu(held_out, x_hat)
    assert test_fvu < bound, f"{architecture}: held-out FVU {test_fvu:.3f}"
    # The last training-curve point is measured on a training batch: close to the held-out error.
    assert curve[-1].step == train.steps - 1 and curve[-1].tokens == train.steps * train.batch_size
    assert abs(curve[-1].explained_variance - (1 - test_fvu)) < 0.1
    l0 = float((latents != 0).float().sum(-1).mean())
    if architecture == "topk":
        assert l0 == pytest.approx(4.0)
    assert abs(curve[-1].l0 - l0) < max(1.0, 0.35 * l0)


def test_latent_vs_probe_against_numpy_and_scipy(tmp_path):
    """Through the real chain: a sae-lens SAE saved in its format, `sae_outputs` over the store,
    then latent_vs_probe on what it stored, against numpy and scipy on the SAE's own outputs."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from pipeline.sae_files import read_decoder
    from pipeline.sae_inference import load_sae
    from pipeline.sae_output_store import SaeOutputs
    from pipeline.sae_outputs import write_sae_outputs
    from pipeline.scaling import latent_vs_probe

    store = planted_sparse_store(seed=1)
    split = RowSplit.of(store)
    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=32, k=3))
    for p in sae.parameters():
        p.data.normal_(0, 0.3)
    with torch.no_grad():
        test_x_hat = sae.decode(sae.encode(torch.from_numpy(store[split.test_rows]))).numpy()
        fit_latents = sae.encode(torch.from_numpy(store[split.fit_rows])).double().numpy()
        fit_x_hat = sae.decode(sae.encode(torch.from_numpy(store[split.fit_rows]))).double().numpy()
    sae.save_model(tmp_path / "sae")
    write_sae_outputs(load_sae(tmp_path / "sae"), store, tmp_path / "outputs.zarr", {"d_sae": 32}, block_rows=300, progress=False)
    got = latent_vs_probe(read_decoder(tmp_path / "sae"), SaeOutputs(tmp_path / "outputs.zarr"), split, block_rows=700)

    b_dec, decoder = sae.b_dec.detach().double().numpy(), sae.W_dec.detach().double().numpy()
    centred = fit_x_hat - b_dec
    design = np.hstack([centred, np.ones((len(centred), 1))])
    solution = np.linalg.lstsq(design, (centred**2).sum(1), rcond=None)[0]
    test_centred = test_x_hat.astype(np.float64) - b_dec
    target = (test_centred**2).sum(1)
    predicted = np.hstack([test_centred, np.ones((len(test_centred), 1))]) @ solution
    r2 = 1 - ((target - predicted) ** 2).sum() / ((target - target.mean()) ** 2).sum()
    assert got.norm_probe_r2 == pytest.approx(r2, abs=1e-4)
    projection = decoder @ solution[:-1]
    np.testing.assert_allclose(got.projection, projection, rtol=1e-4, atol=1e-6)
    fired = (fit_latents != 0).sum(0) > 0
    mean_activation = fit_latents.sum(0)[fired] / (fit_latents != 0).sum(0)[fired]
    np.testing.assert_allclose(got.mean_activation[fired], mean_activation, rtol=1e-6)
    assert np.isnan(got.mean_activation[~fired]).all()
    assert got.pearson == pytest.approx(np.corrcoef(projection[fired], mean_activation)[0, 1], abs=1e-4)
    assert got.spearman == pytest.approx(np.corrcoef(rankdata(projection[fired]), rankdata(mean_activation))[0, 1], abs=1e-4)


def test_token_losses_against_cross_entropy():
    from transformers import AutoModelForCausalLM, LlamaConfig

    from pipeline.lm_loss import token_losses

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    current, following = token_losses(model, ids)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 50), ids[:, 1:].reshape(-1), reduction="none").reshape(3, 9)
    torch.testing.assert_close(following[:, :-1], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(current[:, 1:], expected, rtol=1e-5, atol=1e-5)  # token t's own loss, given the tokens before it
    assert torch.isnan(following[:, -1]).all() and torch.isnan(current[:, 0]).all()


@pytest.mark.slow
def test_lm_loss_store_against_cross_entropy_on_a_test_context(smoke_repo):
    """The stored per-token losses of the first test context, recomputed from the LM's logits with
    cross_entropy; rows reserved for SAE training are NaN (the stage skips them)."""
    from pipeline.models import load_model
    from pipeline.tokens import TokenStore

    tokens = TokenStore.open(smoke_repo / "artifacts/tokens.zarr")
    group = zarr.open_group(smoke_repo / "artifacts/lm_loss.zarr", mode="r")
    current, following = group["loss_current"][:], group["loss_next"][:]
    assert len(current) == tokens.n_rows
    assert np.isnan(current[: tokens.n_sae_rows]).all() and np.isnan(following[: tokens.n_sae_rows]).all()
    context = tokens.split.test_contexts().start
    ids = torch.from_numpy(tokens.contexts[context : context + 1]).long()
    with torch.no_grad():
        logits = load_model(smoke_repo / "artifacts/model", "float32", "cpu")(input_ids=ids).logits[0]
    ce = F.cross_entropy(logits[:-1], ids[0, 1:], reduction="none").numpy()  # ce[p]: the token at p + 1
    positions = np.nonzero(tokens.mask[context])[0]
    rows = slice(tokens.context_row_starts[context], tokens.context_row_starts[context + 1])
    expected_next = np.array([ce[p] if p + 1 < ids.shape[1] else np.nan for p in positions])
    expected_current = np.array([ce[p - 1] for p in positions])
    np.testing.assert_allclose(following[rows], expected_next, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(current[rows], expected_current, rtol=1e-4, atol=1e-5)
