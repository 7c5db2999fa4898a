"""The smoke-scale DAG on the real SmolLM2 model and real DVC, checked against transformers directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.activation_store import iter_row_blocks, open_store, store_path
from pipeline.config import HarvestConfig, Hook, TokensConfig, section
from pipeline.models import load_model
from pipeline.tokens import TokenStore
from tests.conftest import run, stages_to_rerun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stores(smoke_repo, smoke_params):
    cfg = section(smoke_params, "harvest", HarvestConfig)
    return {h.name: open_store(store_path(smoke_repo / "artifacts/activations", h)) for h in cfg.parsed_hooks()}


@pytest.fixture(scope="module")
def tokens(lm_repo):
    return TokenStore.open(lm_repo / "artifacts/tokens.zarr")


@pytest.fixture(scope="module")
def hidden_states(lm_repo, tokens):
    """Direct transformers forward pass on the same contexts: hidden_states[L] is resid_pre of L."""
    model = load_model(lm_repo / "artifacts/model")
    with torch.inference_mode():
        out = model(torch.from_numpy(tokens.contexts).long(), output_hidden_states=True)
    return model, [h.numpy() for h in out.hidden_states]


def rows_of(tokens: TokenStore, per_position: np.ndarray) -> np.ndarray:
    """(n_contexts, T, d) -> (n_rows, d) in token-index order."""
    return per_position[tokens.mask]


def test_stores_have_one_row_per_scored_token(smoke_repo, smoke_params, stores, tokens):
    tok_cfg = section(smoke_params, "tokens", TokensConfig)
    # Every position from first_scored_position on, except the document separators (BOS).
    after_skip = tokens.contexts[:, tok_cfg.first_scored_position :]
    expected = int((after_skip != tokens.bos_token_id).sum())
    assert tokens.contexts.shape == (tok_cfg.n_contexts, tok_cfg.context_length)
    assert 0 < expected < after_skip.size  # the smoke text has separators to skip
    assert tokens.n_rows == expected
    for name, array in stores.items():
        assert array.shape == (expected, 576), name
        attrs = dict(array.attrs)
        hook = Hook.parse(name, "test")
        assert attrs["committed_rows"] == expected
        assert attrs["hook"] == name and attrs["site"] == hook.site and attrs["layer"] == hook.layer
        assert attrs["model"] == "smollm2_135m"
        assert attrs["token_store_hash"] == tokens.content_hash
        assert attrs["compute_dtype"] == "float32" and array.dtype == np.float32


def test_token_index_matches_contexts(lm_repo, tokens):
    import zarr

    rows = zarr.open_group(lm_repo / "artifacts/tokens.zarr", mode="r")["rows"]
    context, position, token = rows["context"][:], rows["position"][:], rows["token"][:]
    assert np.array_equal(tokens.contexts[context, position], token)
    assert position.min() == tokens.first_scored_position
    assert not (token == tokens.bos_token_id).any()
    assert (tokens.contexts[:, 0] == tokens.bos_token_id).all()
    # Train rows first: the row of the first test context starts at n_train_rows.
    assert context[tokens.n_train_rows] == tokens.n_train_contexts
    assert context[tokens.n_train_rows - 1] == tokens.n_train_contexts - 1


def test_activations_equal_a_direct_forward_pass(stores, tokens, hidden_states):
    _, hidden = hidden_states
    checked = 0
    for name, array in stores.items():
        hook = Hook.parse(name, "test")
        if hook.site == "resid_pre":
            expected = rows_of(tokens, hidden[hook.layer])
        elif hook.site == "resid_post":
            expected = rows_of(tokens, hidden[hook.layer + 1])
        else:
            continue
        np.testing.assert_allclose(array[:], expected, rtol=1e-4, atol=1e-4)
        checked += 1
    assert checked >= 3


def test_resid_post_equals_next_resid_pre(stores):
    np.testing.assert_array_equal(stores["blocks.1.hook_resid_post"][:], stores["blocks.2.hook_resid_pre"][:])


def test_block_update_is_attention_plus_mlp(stores, hidden_states):
    """resid_post - resid_pre = o_proj(attn z) + mlp_out: ties all four sites together (Llama)."""
    model, _ = hidden_states
    o_proj = model.model.layers[2].self_attn.o_proj
    z = torch.from_numpy(stores["blocks.2.attn.hook_z"][:])
    with torch.inference_mode():
        attn_out = o_proj(z).numpy()
    update = stores["blocks.2.hook_resid_post"][:] - stores["blocks.2.hook_resid_pre"][:]
    np.testing.assert_allclose(update, attn_out + stores["blocks.2.hook_mlp_out"][:], rtol=1e-4, atol=1e-4)


def test_streaming_reader_covers_every_row_once(stores):
    array = stores["blocks.3.hook_resid_post"]
    blocks = list(iter_row_blocks(array, start=100, rows=256))
    assert blocks[0][0] == 100 and all(b[0] % 256 == 0 for b in blocks[1:])
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), array[100:])


def test_second_repro_does_nothing(smoke_repo):
    out = run(["dvc", "repro"], smoke_repo).stdout
    assert "Running stage" not in out, out
    assert "didn't change" in out or "up to date" in out.lower()


def test_harvest_param_reruns_only_harvest(smoke_repo):
    ran = stages_to_rerun(smoke_repo, "harvest", "chunk_rows", 128)
    # (--dry cannot know yet that harvest's outputs will change, so it lists only harvest itself.)
    assert ran == {"harvest"}, ran
    status = run(["dvc", "status", "model", "tokens"], smoke_repo).stdout
    assert "up to date" in status.lower(), status
