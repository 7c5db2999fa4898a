"""Whether an SAE takes centred inputs, from its cfg.json alone (no torch: for the numpy-only stages).

`pipeline.sae_inference` runs the full check of an SAE's input conventions when it loads the SAE
(docs/science.md, "SAE input conventions"), and refuses what it cannot follow; the stages that
use the SAE's stored outputs without loading it (`scaling`) only need its answer to one question,
which this module gives the same way. tests/test_sae_conventions.py holds the two equal.
"""

from __future__ import annotations

import json
from pathlib import Path

# The hooks whose values TransformerLens's center_writing_weights changes (pipeline.sae_inference).
RESIDUAL_WRITING_HOOKS = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
                          "hook_attn_out", "hook_mlp_out", "hook_result")


def takes_centred_input(sae_dir: Path | str) -> bool:
    """True for an SAE trained on TransformerLens activations with center_writing_weights, at a hook
    that writes to the residual stream: it encodes x minus its per-token mean."""
    metadata = json.loads((Path(sae_dir) / "cfg.json").read_text()).get("metadata") or {}
    if (metadata.get("model_class_name") or "HookedTransformer") != "HookedTransformer":
        return False
    kwargs = metadata.get("model_from_pretrained_kwargs") or {}
    hook = str(metadata.get("hook_name")).rsplit(".", 1)[-1]
    return bool(kwargs.get("center_writing_weights")) and hook in RESIDUAL_WRITING_HOOKS
