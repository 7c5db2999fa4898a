"""pipeline.logprobs: position-chunked log-softmax, KL and next-token CE equal, bit for bit, the
whole-tensor computations they replace, and agree with torch's own KL and cross-entropy."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.logprobs import kl_and_next_token_losses, log_softmax_float32, next_token_losses, position_chunks

B, T, V = 3, 11, 257


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    clean, other = (torch.randn(B, T, V, generator=g) * 3).to(dtype), (torch.randn(B, T, V, generator=g) * 3).to(dtype)
    ids = torch.randint(0, V, (B, T), generator=g)
    return clean, other, ids


def test_chunks_cover_the_positions_once_and_respect_the_size():
    for chunk_elements in (1, B * V, 4 * B * V - 1, 10**9):
        chunks = list(position_chunks(torch.Size((B, T, V)), chunk_elements))
        assert [p for s in chunks for p in range(s.start, s.stop)] == list(range(T))
        assert all((s.stop - s.start) * B * V <= max(chunk_elements, B * V) for s in chunks)


@pytest.mark.parametrize("chunk_elements", [1, 2 * B * V, 5 * B * V, 10**9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_equals_whole_tensor_bit_for_bit(chunk_elements, dtype):
    clean, other, ids = _data(dtype)
    clean_lp = torch.log_softmax(clean.float(), dim=-1)
    other_lp = torch.log_softmax(other.float(), dim=-1)
    assert torch.equal(log_softmax_float32(clean, chunk_elements), clean_lp)
    whole_kl = torch.einsum("btv,btv->bt", clean_lp.exp(), clean_lp - other_lp)
    whole_ce = -other_lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    kl, ce = kl_and_next_token_losses(clean_lp, other, ids, chunk_elements)
    assert torch.equal(kl, whole_kl)
    assert torch.equal(ce[:, :-1], whole_ce) and torch.isnan(ce[:, -1]).all()
    assert torch.equal(next_token_losses(other, ids, chunk_elements).nan_to_num(-1.0), ce.nan_to_num(-1.0))


def test_against_torch_kl_div_and_cross_entropy():
    clean, other, ids = _data()
    kl, ce = kl_and_next_token_losses(torch.log_softmax(clean, -1), other, ids, chunk_elements=2 * B * V)
    expected_kl = F.kl_div(torch.log_softmax(other, -1), torch.log_softmax(clean, -1), reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-5, atol=1e-6)
    expected_ce = F.cross_entropy(other[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none").reshape(B, T - 1)
    torch.testing.assert_close(ce[:, :-1], expected_ce, rtol=1e-5, atol=1e-6)


def test_a_single_position_sequence_has_no_next_token_loss():
    _, other, ids = _data()
    assert torch.isnan(next_token_losses(other[:, :1], ids[:, :1], chunk_elements=1)).all()
