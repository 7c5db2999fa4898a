"""Stage processes import only what they use: a stage that runs no SAE and no LM imports neither
torch nor sae-lens nor transformers, and a stage that only runs an SAE forward does not import
sae-lens (pipeline/sae_inference.py reads its files). Checked twice: in a fresh interpreter
(sys.modules after importing the stage script) and in the source of every project file the script
can run, function-level imports included (pipeline.code_deps's closure), so a lazy import inside
a stage's body fails here too."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from pipeline.code_deps import closure, stage_scripts
from tests.conftest import REPO

HEAVY = ("torch", "transformers", "sae_lens", "transformer_lens")
NUMPY_ONLY = ("probes", "scaling", "earlier_components", "probes_summary", "sae_summary", "layer_sweep", "report", "contours",
              "validate", "code")
SAE_FORWARD_ONLY = ("sae_outputs", "synthetic", "pursuit")
"""Run an SAE (torch) but never train one: no sae-lens, no transformers."""
LM = ("model", "tokens", "harvest", "lm_loss", "interventions", "component_ce")
"""Run the LM (transformers, loaded inside the stage), no sae-lens."""
TRAINING = ("train_sae", "error_saes")
"""Train with sae-lens: they may import everything."""
FORBIDDEN = {**{s: HEAVY for s in NUMPY_ONLY}, **{s: ("sae_lens", "transformer_lens", "transformers") for s in SAE_FORWARD_ONLY},
             **{s: ("sae_lens", "transformer_lens") for s in LM}}


def test_every_stage_script_is_classified():
    scripts = {module.rpartition(".")[2] for module in stage_scripts()}
    assert scripts | {"code"} == set(NUMPY_ONLY + SAE_FORWARD_ONLY + LM + TRAINING)


def imported_top_level_packages(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def script_module(stage: str) -> str:
    return "pipeline.code_deps" if stage == "code" else f"stages.{stage}"


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_no_file_a_stage_can_run_imports_a_package_it_must_not(stage):
    found = {path: sorted(imported_top_level_packages(REPO / path) & set(FORBIDDEN[stage]))
             for path in closure(script_module(stage))}
    assert not {p: f for p, f in found.items() if f}, f"stage {stage} can import {found}"


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_importing_a_stage_script_loads_none_of_them(stage):
    code = f"import sys, {script_module(stage)}; print(' '.join(sorted(set(sys.modules) & set({HEAVY!r}))))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert not set(loaded) & set(FORBIDDEN[stage]), f"importing stages.{stage} loads {loaded}"
