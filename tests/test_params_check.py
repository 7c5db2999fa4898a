"""The whole of params.yaml is checked once, first: every section, and the rules between them."""

import time
from dataclasses import MISSING, fields

import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.config import ConfigError
from pipeline.params_check import SECTIONS, check_params
from tests.conftest import REPO, copy_repo, run


def _params(**changes) -> OmegaConf:
    """The committed params.yaml with 'section.key' -> value changes."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    return OmegaConf.create(raw)


def test_the_committed_params_pass():
    params = check_params(_params())
    assert params.synthetic.hook in params.sae.hooks and params.lm.compute_dtype == "bfloat16"
    assert len(params.sae.names()) == len(params.sae.hooks) * len(params.sae.widths) + len(params.sae.extra_hooks) * len(params.sae.extra_widths)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"pursuit__widths": [999]}, "pursuit.hooks[0] x pursuit.widths[0]"),
        ({"interventions__hooks": ["blocks.9.hook_resid_post"]}, "interventions.hooks[0] x interventions.widths[0]"),
        ({"component_ce__widths": [1152, 7]}, "component_ce.hooks[0] x component_ce.widths[1]"),
        # An extra hook has an SAE of the extra widths only.
        ({"pursuit__hooks": ["blocks.22.hook_resid_post"], "pursuit__widths": [576]}, "pursuit.hooks[0] x pursuit.widths[0]"),
        ({"sae__extra_hooks": ["blocks.15.hook_resid_post"]}, "sae.extra_hooks[0]"),
        ({"sae__extra_widths": []}, "sae.extra_hooks / sae.extra_widths"),
        ({"sae__extra_hooks": ["blocks.9.hook_resid_post"]}, "sae.extra_hooks[0]"),
        ({"earlier_components__widths": [576]}, "earlier_components.sources[1]"),
        ({"error_saes__hooks": ["blocks.15.hook_resid_mid"]}, "error_saes.hooks[0]"),
        ({"synthetic__widths": [576, 2304]}, "synthetic.hooks / synthetic.widths"),
        ({"earlier_components__sources": ["blocks.2.hook_resid_post"]}, "earlier_components.sources[0]"),
        ({"sae__hooks": ["blocks.15.hook_resid_post", "blocks.9.hook_resid_post"]}, "sae.hooks[1]"),
        ({"lm__device": "gpu"}, "lm.device"),
        ({"pursuit__device": "cuda:x"}, "pursuit.device"),
        ({"lm__batch_size": 0}, "lm.batch_size"),
        ({"interventions__single_position": 127}, "interventions.single_position"),
        ({"train_sae__tokens": "many"}, "train_sae.tokens"),
    ],
)
def test_a_bad_value_names_its_key(change, key):
    with pytest.raises(ConfigError) as error:
        check_params(_params(**change))
    assert str(error.value).startswith(key), str(error.value)


def test_a_section_may_name_an_extra_grid_sae():
    params = check_params(_params(pursuit__hooks=["blocks.22.hook_resid_post"], pursuit__widths=[1152]))
    assert params.sae.has("blocks.22.hook_resid_post", 1152) and not params.sae.has("blocks.22.hook_resid_post", 576)
    assert params.sae.names()[:4] == [f"blocks.15.hook_resid_post-{w}" for w in (144, 288, 576, 1152)]


def test_an_unknown_section_is_named():
    raw = _params()
    raw["pursiut"] = {"widths": [576]}
    with pytest.raises(ConfigError, match="^pursiut: unknown section"):
        check_params(raw)


def test_each_default_lives_in_the_dataclass_and_conf_config_yaml_repeats_it():
    """conf/config.yaml and its default model and data groups (what Hydra composes) hold every
    field, each with the dataclass's default."""
    root = yaml.safe_load((REPO / "conf/config.yaml").read_text())
    groups = {list(entry)[0]: list(entry.values())[0] for entry in root["defaults"] if isinstance(entry, dict)}
    for group in ("model", "data"):
        root[group] = yaml.safe_load((REPO / "conf" / group / f"{groups[group]}.yaml").read_text())
    for name, cls in SECTIONS.items():
        assert name in root, f"conf/config.yaml has no {name} section"
        for f in fields(cls):
            assert f.name in root[name], f"conf/config.yaml: {name}.{f.name} missing"
            default = f.default_factory() if f.default is MISSING else f.default
            assert root[name][f.name] == default, f"{name}.{f.name}: conf/config.yaml {root[name][f.name]!r}, dataclass {default!r}"
        assert set(root[name]) == {f.name for f in fields(cls)}, f"{name}: keys of conf/config.yaml and the dataclass differ"


@pytest.mark.parametrize(
    "override, key",
    [("pursuit.widths=[999]", "pursuit.hooks[0] x pursuit.widths[0]"), ("sae.hooks=[blocks.2.hook_resid_post,blocks.0.hook_mlp_out]", "sae.hooks[1]")],
)
def test_dvc_exp_run_fails_on_a_bad_value_before_any_work(tmp_path, override, key):
    repo = copy_repo(tmp_path)
    started = time.perf_counter()
    result = run(["dvc", "exp", "run", "-S", "scale=smoke", "-S", override], repo, check=False)
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"configuration error: {key}" in output, output
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"code", "validate"}, ran  # `code` only hashes the source files
    print(f"dvc exp run -S {override}: failed after {seconds:.1f} s")


def test_resolve_device_names_the_callers_key():
    import torch

    from pipeline.devices import resolve_device

    expected_auto = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto", "pursuit.device").type == expected_auto
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^pursuit\.device: 'cuda:1' asked for, but torch sees no CUDA device"):
            resolve_device("cuda:1", "pursuit.device")
    with pytest.raises(ConfigError, match=r"^synthetic\.device: 'gpu' is not a torch device"):
        resolve_device("gpu", "synthetic.device")
