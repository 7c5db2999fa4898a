"""DVC stage `tokens`: text -> fixed-length contexts with a seeded train/test split (Zarr)."""

import argparse
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.params_check import load_checked_params
from pipeline.models import checkpoint_info, load_model_config, load_tokenizer, max_positions
from pipeline.text import documents
from pipeline.tokens import bos_token_id, split_train_first, token_stream_contexts, write_token_store
from stages.common import run_and_exit, stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("tokens", reads=["params.yaml:data,tokens,model.bos_token", str(args.model)], writes=[str(args.out)]):
        params = load_checked_params()
        data_cfg, tokens_cfg = params.data, params.tokens
        bos_token = params.model.bos_token
        limit = max_positions(load_model_config(args.model))
        if limit is not None and tokens_cfg.context_length > limit:
            raise ConfigError(
                f"tokens.context_length: {tokens_cfg.context_length} is longer than the model's maximum of {limit} positions"
            )
        tokenizer = load_tokenizer(args.model)
        bos = bos_token_id(tokenizer, bos_token)
        contexts = token_stream_contexts(
            documents(data_cfg, tokens_cfg.seed), tokenizer, tokens_cfg, bos, data_cfg.name
        )
        ordered, n_train = split_train_first(contexts, tokens_cfg)
        store = write_token_store(
            args.out, ordered, n_train, tokens_cfg, data_cfg, bos, checkpoint_info(args.model)["model"]["name"],
            n_sae=tokens_cfg.n_sae_contexts(n_train),
        )
        print(
            f"tokens: {store.n_contexts} contexts ({store.n_sae_contexts} SAE train, "
            f"{store.n_train_contexts - store.n_sae_contexts} fit train) x {ordered.shape[1]} tokens; "
            f"{store.n_rows} scored rows ({store.n_sae_rows} SAE train, {store.n_train_rows - store.n_sae_rows} fit train) -> {args.out}"
        )


if __name__ == "__main__":
    run_and_exit(main)
