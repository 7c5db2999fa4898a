"""Splicing a replacement activation into a HuggingFace causal LM at a hook site, re-running only
the part of the network after the site.

`PrefixCache.run(input_ids)` does one clean forward pass: it keeps the clean logits, the
activation at the site and the outputs of every block before the site. `splice(replacement)`
then runs the model again with those blocks replaced by stubs that return their cached outputs
(no compute), the replacement written in at the site, and the rest of the network run for real.
The model's own forward still builds masks and position embeddings, so nothing here depends on
how an architecture wires its blocks beyond `pipeline.sites`.

`splice_naive` is the reference design: a full forward pass per replacement.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from pipeline.config import Hook
from pipeline.logprobs import kl_and_next_token_losses, log_softmax_float32
from pipeline.sites import architecture, blocks, capture_point


def _with_first(output, first: torch.Tensor):
    """`output` (a tensor, or a tuple whose first item is the hidden state) with `first` swapped in."""
    if isinstance(output, tuple):
        return (first, *output[1:])
    return first


def _first(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def _replacing(model: nn.Module, hook: Hook, replacement: torch.Tensor) -> Iterator[None]:
    """Within the block, the activation at `hook` is `replacement` (B, T, d) in every forward pass."""
    module, kind = capture_point(model, hook)
    if kind == "input":

        def pre_hook(_module, args, kwargs):
            if args:
                return (replacement, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": replacement}

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda _m, _a, output: _with_first(output, replacement))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _stubbed(modules: list[nn.Module], outputs: list) -> Iterator[None]:
    """Within the block, each module's forward returns its cached output without computing."""
    for module, output in zip(modules, outputs):
        module.forward = lambda *args, _output=output, **kwargs: _output
    try:
        yield
    finally:
        for module in modules:
            del module.forward  # back to the class's forward


class PrefixCache:
    """Clean forward pass of one batch, cached for splicing at one hook site."""

    def __init__(self, model: nn.Module, hook: Hook):
        self.model = model
        self.hook = hook
        architecture(model.config.model_type)  # fails early, by name, for unknown architectures
        self.blocks = list(blocks(model))
        # resid_post: the site's own block is stubbed (returning the replacement); other sites
        # re-run their block from its (cached) input.
        self.n_stubbed = hook.layer + 1 if hook.site == "resid_post" else hook.layer

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor) -> None:
        """The clean pass: sets `clean_logprobs` (B, T, V) float32 log-softmax (the one float32
        vocabulary-sized tensor of a batch), `activation` (B, T, d) at the site."""
        self.input_ids = input_ids
        outputs: list = [None] * self.n_stubbed
        handles = [
            block.register_forward_hook(lambda _m, _a, output, i=i: outputs.__setitem__(i, output))  # returns None
            for i, block in enumerate(self.blocks[: self.n_stubbed])
        ]
        module, kind = capture_point(self.model, self.hook)
        captured = {}

        def keep_input(_module, args, kwargs) -> None:  # returns None: inputs unchanged
            captured["x"] = args[0] if args else kwargs["hidden_states"]

        def keep_output(_module, _args, output) -> None:
            captured["x"] = _first(output)

        if kind == "input":
            handles.append(module.register_forward_pre_hook(keep_input, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(keep_output))
        try:
            self.clean_logprobs = log_softmax_float32(self.model(input_ids=input_ids, use_cache=False).logits)
        finally:
            for handle in handles:
                handle.remove()
        self.block_outputs = outputs
        self.activation = captured["x"].detach()

    @torch.no_grad()
    def splice(self, replacement: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V), in the model's dtype, with the site's activation replaced; only the
        suffix is computed."""
        replacement = replacement.to(self.activation.dtype)
        if self.hook.site == "resid_post":
            outputs = [*self.block_outputs[:-1], _with_first(self.block_outputs[-1], replacement)]
            with _stubbed(self.blocks[: self.n_stubbed], outputs):
                return self.model(input_ids=self.input_ids, use_cache=False).logits
        with _stubbed(self.blocks[: self.n_stubbed], self.block_outputs), _replacing(self.model, self.hook, replacement):
            return self.model(input_ids=self.input_ids, use_cache=False).logits


@torch.no_grad()
def splice_naive(model: nn.Module, hook: Hook, input_ids: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
    """The reference: a full forward pass with the activation at `hook` replaced; logits in the model's dtype."""
    with _replacing(model, hook, replacement):
        return model(input_ids=input_ids, use_cache=False).logits


def token_kl_and_ce(clean_logprobs: torch.Tensor, logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: KL(P_clean || P) summed over the vocabulary (B, T), and the CE of the next
    token under P (B, T; NaN at the last position, which has no next token). `clean_logprobs` is
    log_softmax of the clean logits (`PrefixCache.clean_logprobs`), computed once per batch;
    `logits` (any dtype) are normalised a few positions at a time (pipeline.logprobs)."""
    return kl_and_next_token_losses(clean_logprobs, logits, input_ids)
