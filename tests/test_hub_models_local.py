"""The hub-model path (GPT-2, Gemma 2 configs) on local stand-ins, and the `datasets` text path on a local jsonl.

Small randomly initialised models of the real architectures are saved to a local directory and
go through the same code as `model.path: google/gemma-2-2b` would: materialise, tokens, harvest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.activation_store import open_store, store_path
from pipeline.config import DataConfig, HarvestConfig, LmConfig, ModelConfig, TokensConfig
from pipeline.harvest import harvest
from pipeline.models import load_model, load_tokenizer, materialise
from pipeline.text import documents
from pipeline.tokens import TokenStore, bos_token_id, split_train_first, token_stream_contexts, write_token_store

pytestmark = pytest.mark.slow

LAYER = 1
HOOKS = [
    f"blocks.{LAYER}.hook_resid_pre",
    f"blocks.{LAYER}.hook_resid_post",
    f"blocks.{LAYER}.hook_mlp_out",
    f"blocks.{LAYER}.attn.hook_z",
]


def tiny_config(arch: str, vocab_size: int):
    from transformers import Gemma2Config, GPT2Config

    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=3, n_head=4, n_positions=128)
    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="module")
def jsonl_corpus(tmp_path_factory) -> Path:
    """Real prose lines (from the pydoc corpus) as a local jsonl file, like a Pile shard."""
    path = tmp_path_factory.mktemp("corpus") / "shard.jsonl"
    docs = list(documents(DataConfig(), seed=0))[:200]
    path.write_text("".join(json.dumps({"text": d, "meta": {"i": i}}) + "\n" for i, d in enumerate(docs)))
    return path


@pytest.fixture(scope="module", params=["gpt2", "gemma2"])
def harvested(request, lm_repo, jsonl_corpus, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    arch = request.param
    work = tmp_path_factory.mktemp(arch)
    tokenizer = load_tokenizer(lm_repo / "artifacts/model")
    torch.manual_seed(0)
    stand_in = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer)))
    stand_in.save_pretrained(work / "hub_dir")
    tokenizer.save_pretrained(work / "hub_dir")

    model_cfg = ModelConfig(
        name=f"tiny_{arch}", source="pretrained", package=None, gguf_file=None, path=str(work / "hub_dir")
    )
    info = materialise(model_cfg, work / "model")
    assert info["model_type"] == arch and info["n_layers"] == 3

    data_cfg = DataConfig(name="jsonl", source="datasets", path="json", data_files=str(jsonl_corpus))
    tokens_cfg = TokensConfig(context_length=32, n_contexts=12, skip_positions=4, test_fraction=0.25, seed=1)
    bos = bos_token_id(tokenizer, None)
    contexts = token_stream_contexts(documents(data_cfg, seed=1), tokenizer, tokens_cfg, bos, "jsonl")
    ordered, n_train = split_train_first(contexts, tokens_cfg)
    tokens = write_token_store(work / "tokens.zarr", ordered, n_train, tokens_cfg, data_cfg, bos, model_cfg.name)

    cfg = HarvestConfig(hooks=HOOKS + ["blocks.0.hook_resid_post"], chunk_rows=16)
    harvest(work / "model", work / "tokens.zarr", work / "acts", cfg, LmConfig(batch_size=5, device="cpu"), scratch=work / "scratch",
            progress=False)
    stores = {name: open_store(store_path(work / "acts", name))[:] for name in cfg.hooks}
    return arch, load_model(work / "model"), tokens, stores, work


def test_resume_from_unequal_committed_rows_with_batches_across_chunks(harvested):
    """As if killed while the writes of different stores had reached different chunks: harvest
    resumes at the least committed row (batches of 5 contexts straddle the 16-row chunks) and
    every store ends identical to the uninterrupted run."""
    import zarr

    from pipeline.config import Hook
    from pipeline.harvest import _fingerprint

    _, _, _, stores, work = harvested
    cfg, lm = HarvestConfig(hooks=HOOKS + ["blocks.0.hook_resid_post"], chunk_rows=16), LmConfig(batch_size=5, device="cpu")
    shutil.copytree(work / "acts", work / "scratch")  # the partial stores a kill leaves: they still carry their fingerprint
    tokens = TokenStore.open(work / "tokens.zarr")
    for name in cfg.hooks:
        zarr.open_array(store_path(work / "scratch", name), mode="r+").attrs["fingerprint"] = _fingerprint(
            work / "model", tokens, Hook.parse(name, "hook"), cfg, lm)
    behind, ahead = (store_path(work / "scratch", name) for name in cfg.hooks[:2])
    zarr.open_array(behind, mode="r+").attrs["committed_rows"] = 32
    zarr.open_array(ahead, mode="r+").attrs["committed_rows"] = 80
    result = harvest(work / "model", work / "tokens.zarr", work / "acts", cfg, lm, scratch=work / "scratch", progress=False)
    assert result.resumed_from_row == 32 and result.rows_computed == result.n_rows - 32
    for name in cfg.hooks:
        np.testing.assert_array_equal(open_store(store_path(work / "acts", name))[:], stores[name])


def test_jsonl_documents_stream_through_datasets(jsonl_corpus):
    cfg = DataConfig(name="jsonl", source="datasets", path="json", data_files=str(jsonl_corpus))
    streamed = list(documents(cfg, seed=0))
    expected = [json.loads(line)["text"] for line in jsonl_corpus.read_text().splitlines()]
    assert streamed == expected


def test_hub_architecture_matches_hidden_states(harvested):
    arch, model, tokens, stores, _ = harvested
    with torch.inference_mode():
        hidden = model(torch.from_numpy(tokens.contexts).long(), output_hidden_states=True).hidden_states

    def rows(t: torch.Tensor) -> np.ndarray:
        return t[torch.from_numpy(tokens.mask)].numpy()

    np.testing.assert_allclose(stores[f"blocks.{LAYER}.hook_resid_pre"], rows(hidden[LAYER]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stores[f"blocks.{LAYER}.hook_resid_post"], rows(hidden[LAYER + 1]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(stores["blocks.0.hook_resid_post"], stores[f"blocks.{LAYER}.hook_resid_pre"])


def test_hub_architecture_sites_decompose_the_block(harvested):
    """resid_post - resid_pre = attention output (from z) + mlp_out, per architecture's wiring."""
    arch, model, _, stores, _ = harvested
    z = torch.from_numpy(stores[f"blocks.{LAYER}.attn.hook_z"])
    with torch.inference_mode():
        if arch == "gpt2":
            attn_out = model.transformer.h[LAYER].attn.c_proj(z)
        else:  # Gemma 2 normalises the attention output before adding it to the residual
            block = model.model.layers[LAYER]
            attn_out = block.post_attention_layernorm(block.self_attn.o_proj(z))
    update = stores[f"blocks.{LAYER}.hook_resid_post"] - stores[f"blocks.{LAYER}.hook_resid_pre"]
    np.testing.assert_allclose(update, attn_out.numpy() + stores[f"blocks.{LAYER}.hook_mlp_out"], rtol=1e-4, atol=1e-5)
    assert stores[f"blocks.{LAYER}.attn.hook_z"].shape[1] == 64  # 4 heads x 16


def test_unknown_hub_id_names_model_path(tmp_path):
    from pipeline.config import ConfigError

    cfg = ModelConfig(name="x", source="pretrained", package=None, gguf_file=None, path="no-such-org/no-such-model-xyz")
    with pytest.raises(ConfigError, match=r"model\.path: 'no-such-org/no-such-model-xyz' is neither a local"):
        materialise(cfg, tmp_path / "model")
    (tmp_path / "empty").mkdir()
    cfg = ModelConfig(name="x", source="pretrained", package=None, gguf_file=None, path=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"model\.path: .* has no config\.json"):
        materialise(cfg, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_token_store_reopens(harvested):
    _, _, tokens, stores, _ = harvested
    again = TokenStore.open(tokens.path)
    assert again.content_hash == tokens.content_hash and again.n_rows == len(next(iter(stores.values())))
