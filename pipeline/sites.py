"""Where each hook site lives in a HuggingFace causal LM, and capturing activations there.

Sites follow TransformerLens / sae-lens naming, so pretrained SAEs' `hook_name` matches:
- resid_pre  (blocks.L.hook_resid_pre):  the residual stream entering block L;
- resid_post (blocks.L.hook_resid_post): the residual stream leaving block L;
- mlp_out    (blocks.L.hook_mlp_out):    what the MLP adds to the residual stream (after
  Gemma 2's post-feedforward norm, as in TransformerLens);
- attn_z     (blocks.L.attn.hook_z):     the concatenated per-head outputs, i.e. the input
  of the attention output projection (heads x d_head, head-major).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from pipeline.config import ConfigError, Hook


@dataclass(frozen=True)
class Architecture:
    """Dotted module paths: `blocks` from the CausalLM; the others from one block."""

    blocks: str
    attn_out_proj: str
    mlp_out: str


_LLAMA_LIKE = Architecture(blocks="model.layers", attn_out_proj="self_attn.o_proj", mlp_out="mlp")
_GEMMA2_LIKE = Architecture(
    blocks="model.layers", attn_out_proj="self_attn.o_proj", mlp_out="post_feedforward_layernorm"
)

ARCHITECTURES: dict[str, Architecture] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
    "gpt2": Architecture(blocks="transformer.h", attn_out_proj="attn.c_proj", mlp_out="mlp"),
}


def architecture(model_type: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"model: architecture {model_type!r} has no hook-site map; supported: {sorted(ARCHITECTURES)} "
            f"(add one to pipeline/sites.py:ARCHITECTURES)"
        )
    return ARCHITECTURES[model_type]


def validate_hooks(hooks: list[Hook], n_layers: int, key: str = "harvest.hooks") -> None:
    """Fail before any heavy work if a hook's layer does not exist in the model."""
    for i, hook in enumerate(hooks):
        if not 0 <= hook.layer < n_layers:
            raise ConfigError(
                f"{key}[{i}]: layer {hook.layer} of {hook.name!r} is out of range; the model has "
                f"{n_layers} layers (0..{n_layers - 1})"
            )


def blocks(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(architecture(model.config.model_type).blocks)


def capture_point(model: nn.Module, hook: Hook) -> tuple[nn.Module, str]:
    """(module, 'input' | 'output'): the activation is that module's first input or its output."""
    arch = architecture(model.config.model_type)
    block = blocks(model)[hook.layer]
    if hook.site == "resid_pre":
        return block, "input"
    if hook.site == "resid_post":
        return block, "output"
    if hook.site == "mlp_out":
        return block.get_submodule(arch.mlp_out), "output"
    if hook.site == "attn_z":
        return block.get_submodule(arch.attn_out_proj), "input"
    raise ConfigError(f"unknown site {hook.site!r}")


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


class StopForward(Exception):
    """Raised from a hook once every requested activation is captured: skips the rest of the net."""


@contextmanager
def capturing(model: nn.Module, hooks: list[Hook], stop_early: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, a forward pass fills the yielded dict {hook name: activation (B, T, d)}.

    With `stop_early`, the pass is cut short (StopForward) as soon as the last hook fires;
    run the model through `forward_until_captured`.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def store(name: str, tensor: torch.Tensor) -> None:
        captured[name] = tensor.detach()
        if stop_early and len(captured) == len(hooks):
            raise StopForward

    for hook in hooks:
        module, kind = capture_point(model, hook)
        if kind == "input":

            def pre_hook(_module, args, kwargs, name=hook.name):
                store(name, args[0] if args else kwargs["hidden_states"])

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:

            def post_hook(_module, _args, output, name=hook.name):
                store(name, _first_tensor(output))

            handles.append(module.register_forward_hook(post_hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def forward_until_captured(model: nn.Module, input_ids: torch.Tensor) -> None:
    """Run the model on `input_ids`; a StopForward from `capturing` ends it early."""
    try:
        model(input_ids=input_ids, use_cache=False)
    except StopForward:
        pass
