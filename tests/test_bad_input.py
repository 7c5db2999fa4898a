"""Bad configuration fails before heavy work, naming the config key and what was allowed."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from pipeline.config import ConfigError, DataConfig, HarvestConfig, LmConfig, TokensConfig, section
from pipeline.harvest import validate
from pipeline.text import documents
from pipeline.tokens import token_stream_contexts
from tests.conftest import REPO, params_with, run_stage


def test_unknown_model_lists_the_known_ones():
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        with pytest.raises(MissingConfigException) as exc:
            compose("config", overrides=["model=gpt3"])
    message = str(exc.value)
    assert "model/gpt3" in message
    for known in ("smollm2_135m", "gpt2", "gemma2_2b", "llama31_8b"):
        assert known in message


def test_unknown_site_names_key_and_sites():
    with pytest.raises(
        ConfigError,
        match=r"harvest\.hooks\[1\]: unknown hook 'blocks\.3\.hook_resid_mid'.*hook_resid_post.*attn\.hook_z",
    ):
        HarvestConfig(hooks=["blocks.3.hook_resid_post", "blocks.3.hook_resid_mid"])


def test_empty_hook_list():
    with pytest.raises(ConfigError, match=r"harvest\.hooks: the list is empty"):
        HarvestConfig(hooks=[])


@pytest.mark.slow
def test_layer_out_of_range_names_key_and_range(lm_repo):
    cfg = HarvestConfig(hooks=["blocks.3.hook_resid_post", "blocks.30.hook_mlp_out"])
    with pytest.raises(ConfigError, match=r"harvest\.hooks\[1\]: layer 30 .* 30 layers \(0\.\.29\)"):
        validate(cfg, LmConfig(), lm_repo / "artifacts/model")


def test_wrong_type_and_unknown_key_name_the_key():
    params = OmegaConf.create({"tokens": {"n_contexts": "many"}})
    with pytest.raises(
        ConfigError, match=r"^tokens\.n_contexts: Value 'many' of type 'str' could not be converted to Integer"
    ):
        section(params, "tokens", TokensConfig)
    params = OmegaConf.create({"tokens": {"n_context": 3}})
    with pytest.raises(ConfigError, match=r"^tokens\.n_context: Key 'n_context' not in 'TokensConfig'"):
        section(params, "tokens", TokensConfig)


def test_value_checks_name_the_key():
    with pytest.raises(ConfigError, match=r"tokens\.skip_positions"):
        TokensConfig(context_length=16, skip_positions=20)
    with pytest.raises(ConfigError, match=r"lm\.compute_dtype: 'float8' is not one of"):
        LmConfig(compute_dtype="float8")
    with pytest.raises(ConfigError, match=r"data\.source: 'web' is not one of \['pydoc', 'docstrings', 'datasets'\]"):
        DataConfig(source="web")


def test_empty_corpus_names_data(tmp_path):
    shard = tmp_path / "empty.jsonl"
    shard.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "   "}) + "\n")
    cfg = DataConfig(name="jsonl", source="datasets", path="json", data_files=str(shard))
    with pytest.raises(ConfigError, match=r"data \(jsonl\): the corpus is empty"):
        token_stream_contexts(documents(cfg, seed=0), tokenizer=None, cfg=TokensConfig(), bos_id=0, source="jsonl")


def test_missing_text_column_names_key(tmp_path):
    shard = tmp_path / "other.jsonl"
    shard.write_text(json.dumps({"content": "some words here"}) + "\n")
    cfg = DataConfig(name="jsonl", source="datasets", path="json", data_files=str(shard))
    with pytest.raises(ConfigError, match=r"data\.text_field: 'text' is not a column.*content"):
        list(documents(cfg, seed=0))


@pytest.mark.slow
def test_context_longer_than_model_fails_in_tokens_stage(lm_repo, tmp_path):
    params = params_with(lm_repo, "tokens", "context_length", 9000)
    args = ["--model", str(lm_repo / "artifacts/model"), "--out", str(tmp_path / "t.zarr")]
    result = run_stage("tokens", args, tmp_path, params, check=False)
    assert result.returncode == 2, result.stderr
    assert "tokens.context_length: 9000 is longer than the model's maximum of 8192 positions" in result.stderr
    assert not (tmp_path / "t.zarr").exists()


@pytest.mark.slow
def test_too_few_tokens_names_n_contexts(lm_repo):
    from pipeline.models import load_tokenizer

    tokenizer = load_tokenizer(lm_repo / "artifacts/model")
    with pytest.raises(ConfigError, match=r"tokens\.n_contexts: 50 contexts of 64 tokens need 3150 tokens"):
        token_stream_contexts(
            iter(["A short document."]),
            tokenizer,
            TokensConfig(context_length=64, n_contexts=50, skip_positions=4),
            0,
            "tiny",
        )
