"""Gradient pursuit (docs/science.md, "Gradient pursuit") on dictionaries with planted sparse codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.pursuit import gradient_pursuit, gradient_pursuit_reference


def planted(n_tokens: int, d: int, m: int, k: int, orthonormal: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if orthonormal:
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        decoder = q[:m]
    else:
        decoder = torch.randn(m, d, generator=g, dtype=torch.float64)
        decoder /= decoder.norm(dim=1, keepdim=True)
    codes = torch.zeros(n_tokens, m, dtype=torch.float64)
    for row in codes:
        atoms = torch.randperm(m, generator=g)[:k]
        row[atoms] = 1 + 2 * torch.rand(k, generator=g, dtype=torch.float64)
    return codes @ decoder, decoder, codes


def test_orthonormal_dictionary_recovers_support_and_coefficients_exactly():
    s, decoder, codes = planted(500, 64, 48, 5, orthonormal=True)
    w = gradient_pursuit(s, decoder, torch.full((500,), 5))
    assert torch.equal(w > 0, codes > 0)
    torch.testing.assert_close(w, codes, atol=1e-10, rtol=0)


def test_low_coherence_dictionary_recovers_the_support():
    s, decoder, codes = planted(500, 512, 64, 3, orthonormal=False)
    coherence = (decoder @ decoder.T - torch.eye(64, dtype=torch.float64)).abs().max()
    assert coherence < 0.25
    w = gradient_pursuit(s, decoder, torch.full((500,), 3))
    assert (torch.equal(w > 0, codes > 0))
    residual = (s - w @ decoder).norm(dim=1) / s.norm(dim=1)
    assert residual.median() < 0.04 and residual.max() < 0.1  # not an orthogonal projection: close, not exact


def test_l0_never_exceeds_each_tokens_target():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(300, 32, generator=g)
    decoder = torch.randn(128, 32, generator=g)
    decoder /= decoder.norm(dim=1, keepdim=True)
    targets = torch.randint(0, 12, (300,), generator=g)
    l0 = (gradient_pursuit(s, decoder, targets) > 0).sum(1)
    assert (l0 <= targets).all()
    assert (l0 == 0)[targets == 0].all()


def test_batched_equals_the_per_token_reference_loop():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(40, 24, generator=g, dtype=torch.float64) + 0.5
    decoder = torch.randn(96, 24, generator=g, dtype=torch.float64)
    decoder /= decoder.norm(dim=1, keepdim=True)
    targets = torch.randint(1, 10, (40,), generator=g)
    batched = gradient_pursuit(s, decoder, targets).numpy()
    for i in range(40):
        expected = gradient_pursuit_reference(s[i].numpy(), decoder.numpy(), int(targets[i]))
        np.testing.assert_allclose(batched[i], expected, atol=1e-10, err_msg=f"token {i}")


@pytest.mark.parametrize("k", [2, 4])
def test_pursuit_reconstruction_beats_a_single_best_atom(k):
    """More atoms, less residual (k = 1 against itself could not fail, so k >= 2)."""
    s, decoder, _ = planted(200, 128, 256, 6, orthonormal=False, seed=3)
    one = (s - gradient_pursuit(s, decoder, torch.full((200,), 1)) @ decoder).norm(dim=1)
    more = (s - gradient_pursuit(s, decoder, torch.full((200,), k)) @ decoder).norm(dim=1)
    assert (more <= one + 1e-9).float().mean() > 0.95
    assert more.mean() < 0.9 * one.mean()


@pytest.mark.slow
def test_pursuit_stage_on_the_smoke_sae(smoke_repo):
    """Pursuit re-encodes at the encoder's own L0: never more atoms, and on real tokens a lower FVU."""
    import json

    m = json.loads((smoke_repo / "metrics/pursuit/blocks.2.hook_resid_post-512.json").read_text())
    assert m["pursuit_l0"] <= m["encoder_l0"] == 16.0
    assert m["pursuit_fvu"] < m["encoder_fvu"]
    assert 0.5 < m["share_of_tokens_pursuit_better"] <= 1
    assert m["per_token_error_ratio"]["q50"] < 1
    sae_fvu = json.loads((smoke_repo / "metrics/sae/blocks.2.hook_resid_post-512.json").read_text())["fvu"]
    # pursuit reads the x_hat sae_outputs stored: its FVU code and sae_outputs' must agree on it.
    assert m["encoder_fvu"] == pytest.approx(sae_fvu, rel=1e-5)


def test_pursuit_of_a_centred_sae_runs_in_its_space_and_returns_to_the_pipelines():
    """An SAE trained on centred activations (pipeline.sae_inference, "Input conventions"): pursuit
    sees x minus its per-token mean, and x_hat gets the mean back, so x - x_hat is the SAE's error."""
    import torch

    from pipeline.pursuit import pursue

    g = torch.Generator().manual_seed(0)
    decoder = torch.nn.functional.normalize(torch.randn(32, 8, generator=g), dim=-1)
    b_dec, x = torch.randn(8, generator=g) * 0.1, torch.randn(20, 8, generator=g) + 3.0  # a mean far from 0
    l0 = torch.full((20,), 3)
    mean = x.mean(-1, keepdim=True)
    in_sae_space, l0_centred = pursue(decoder, b_dec, x - mean, l0)
    x_hat, l0_pursued = pursue(decoder, b_dec, x, l0, center_input=True)
    torch.testing.assert_close(x_hat, in_sae_space + mean)
    assert torch.equal(l0_pursued, l0_centred)
    assert (pursue(decoder, b_dec, x, l0)[0] - x_hat).abs().max() > 0.1  # without centring it differs
