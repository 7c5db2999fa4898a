"""Tiny random GPT-2 and Llama checkpoints saved locally, and the same weights as TransformerLens
HookedTransformers built offline (no hub access: `from_pretrained` with an official name would
fetch the hub config, so the HookedTransformerConfig is written here from the HF config, field for
field as transformer_lens.loading_from_pretrained.convert_hf_model_config does for these two
architectures).

Shared by tests/test_transformer_lens_parity.py and tests/test_sae_conventions.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB, N_LAYERS, D_MODEL, N_HEADS, N_CTX = 211, 3, 64, 4, 64
ARCHS = ("gpt2", "llama")


def hf_config(arch: str):
    """Small, with the settings that a wrong TL config would get wrong set to non-default values."""
    from transformers import GPT2Config, LlamaConfig

    if arch == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_positions=N_CTX,
                          layer_norm_epsilon=1e-4, initializer_range=0.1, bos_token_id=0, eos_token_id=0)
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=96, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=N_CTX, rms_norm_eps=1e-5, rope_theta=5000.0, hidden_act="silu",
        initializer_range=0.1, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )


def save_tiny_model(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised model of `arch`, saved with save_pretrained (no tokenizer: tests feed ids)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=torch.float32)
    with torch.no_grad():  # random LayerNorm/RMSNorm gains and biases: folding or centring them must be exact
        for name, param in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "layernorm.weight", "norm.weight")):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
    model.save_pretrained(out_dir)
    return Path(out_dir)


def tl_config(hf):
    """The HookedTransformerConfig of an HF GPT-2 or Llama config."""
    from transformer_lens import HookedTransformerConfig

    common = dict(d_vocab=hf.vocab_size, n_layers=hf.num_hidden_layers, d_model=hf.hidden_size,
                  n_heads=hf.num_attention_heads, d_head=hf.hidden_size // hf.num_attention_heads,
                  device="cpu", dtype=torch.float32)
    if hf.model_type == "gpt2":
        return HookedTransformerConfig(
            **common, d_mlp=hf.n_inner or 4 * hf.n_embd, n_ctx=hf.n_positions, eps=hf.layer_norm_epsilon,
            act_fn=hf.activation_function,  # gelu_new
            normalization_type="LN", positional_embedding_type="standard",
            use_attn_scale=hf.scale_attn_weights, scale_attn_by_inverse_layer_idx=hf.scale_attn_by_inverse_layer_idx,
            original_architecture="GPT2LMHeadModel",
        )
    if hf.model_type == "llama":
        rope = getattr(hf, "rope_parameters", None) or {}
        rope_theta = getattr(hf, "rope_theta", None) or rope.get("rope_theta", 10000.0)
        assert rope.get("rope_type", "default") == "default", rope  # llama3 scaling is not set up here
        return HookedTransformerConfig(
            **common, d_mlp=hf.intermediate_size, n_ctx=hf.max_position_embeddings, eps=hf.rms_norm_eps,
            act_fn=hf.hidden_act, gated_mlp=True, normalization_type="RMS", final_rms=True,
            n_key_value_heads=hf.num_key_value_heads if hf.num_key_value_heads != hf.num_attention_heads else None,
            positional_embedding_type="rotary", rotary_dim=hf.hidden_size // hf.num_attention_heads,
            rotary_base=rope_theta, rotary_adjacent_pairs=False,  # HF's rotate_half: first and second halves
            original_architecture="LlamaForCausalLM",
        )
    raise ValueError(f"no TransformerLens config for {hf.model_type!r}")


def tl_model(hf_model, fold_ln: bool = False, center_writing_weights: bool = False, center_unembed: bool = False,
             fold_value_biases: bool = False, refactor_factored_attn_matrices: bool = False):
    """A HookedTransformer with `hf_model`'s weights; the processing flags are TL's (all off: TL's
    `from_pretrained_no_processing`, which is what sae-lens loads before applying an SAE's
    `model_from_pretrained_kwargs`)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    cfg = tl_config(hf_model.config)
    convert = {"gpt2": convert_gpt2_weights, "llama": convert_llama_weights}[hf_model.config.model_type]
    state_dict = {name: t.detach().clone() for name, t in convert(hf_model, cfg).items()}
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        state_dict, fold_ln=fold_ln, center_writing_weights=center_writing_weights, center_unembed=center_unembed,
        fold_value_biases=fold_value_biases, refactor_factored_attn_matrices=refactor_factored_attn_matrices,
    )
    return model.eval()


def tl_activation(cache, name: str) -> torch.Tensor:
    """TL's activation at a hook name in the project's layout: hook_z (B, T, heads, d_head) -> (B, T, heads*d_head)."""
    x = cache[name]
    return x.flatten(-2) if name.endswith("attn.hook_z") else x
