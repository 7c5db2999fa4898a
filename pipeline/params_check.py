"""Check the whole of `params.yaml` at once: every section's keys, types and values, and the
rules that join sections. The `validate` stage runs this first in the DAG, so a bad value fails
in seconds, naming its key, before any model or SAE work; every other stage reads its sections
through `load_checked_params` and so gets the same checks.

Cross-section rules:
- `sae.hooks` is a subset of `harvest.hooks` (an SAE trains on harvested activations);
- every section that names SAEs (`hooks` x `widths`) names only SAEs of the `sae` section, and
  `synthetic` / `earlier_components` name exactly one;
- `earlier_components.sources` have SAEs of the target's width;
- `interventions.single_position` is a scored position of a context.
Only the standard library and omegaconf are imported: this runs in well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.analysis_config import (
    ANALYSIS_SECTIONS,
    SELECTING_SECTIONS,
    SINGLE_SAE_SECTIONS,
    ComponentCeConfig,
    EarlierComponentsConfig,
    ErrorSaesConfig,
    InterventionsConfig,
    ProbesConfig,
    PursuitConfig,
    SaeOutputsConfig,
    ScalingConfig,
    SyntheticConfig,
)
from pipeline.config import (
    PARAMS_FILE,
    ConfigError,
    DataConfig,
    HarvestConfig,
    Hook,
    LmConfig,
    ModelConfig,
    TokensConfig,
    load_params,
    section,
)
from pipeline.sae_config import SaeSetConfig, TrainSaeConfig

CORE_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "tokens": TokensConfig,
    "lm": LmConfig,
    "harvest": HarvestConfig,
    "sae": SaeSetConfig,
    "train_sae": TrainSaeConfig,
}
SECTIONS = {**CORE_SECTIONS, **ANALYSIS_SECTIONS}
OTHER_KEYS = ("launcher",)
"""Top-level keys of params.yaml that are not sections."""
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_KEYS = ("lm.device", "train_sae.device", "sae_outputs.device", "synthetic.device", "pursuit.device")


@dataclass(frozen=True)
class Params:
    """Every section of params.yaml, validated."""

    model: ModelConfig
    data: DataConfig
    tokens: TokensConfig
    lm: LmConfig
    harvest: HarvestConfig
    sae: SaeSetConfig
    train_sae: TrainSaeConfig
    sae_outputs: SaeOutputsConfig
    probes: ProbesConfig
    earlier_components: EarlierComponentsConfig
    scaling: ScalingConfig
    synthetic: SyntheticConfig
    interventions: InterventionsConfig
    component_ce: ComponentCeConfig
    pursuit: PursuitConfig
    error_saes: ErrorSaesConfig
    launcher: str = ""


def check_selection(key: str, hooks: list[str], widths: list[int], sae: SaeSetConfig, single: bool = False) -> None:
    """Section `key` names SAEs as `hooks` x `widths`; each must be an SAE of the `sae` section."""
    if not hooks or not widths:
        raise ConfigError(f"{key}.hooks / {key}.widths: both need at least one entry")
    if single and (len(hooks) != 1 or len(widths) != 1):
        raise ConfigError(f"{key}.hooks / {key}.widths: this analysis is built on one SAE; give one hook and one width, "
                          f"got hooks {hooks}, widths {widths}")
    for i, hook in enumerate(hooks):
        Hook.parse(hook, f"{key}.hooks[{i}]")
        for j, width in enumerate(widths):
            if not sae.has(hook, width):
                raise ConfigError(f"{key}.hooks[{i}] x {key}.widths[{j}]: there is no SAE of width {width} at {hook!r}; "
                                  f"the SAEs are sae.hooks x sae.widths ({sae.hooks} x {sae.widths}) and sae.extra_hooks x "
                                  f"sae.extra_widths ({sae.extra_hooks} x {sae.extra_widths})")


def check_params(raw: Any) -> Params:
    """Validate every section of the composed params and the rules between them."""
    unknown = sorted(set(raw) - set(SECTIONS) - set(OTHER_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section of {PARAMS_FILE}; sections are {sorted(SECTIONS)}")
    sections = {name: section(raw, name, cls) for name, cls in SECTIONS.items()}
    params = Params(**sections, launcher=str(raw.get("launcher") or ""))
    for key in DEVICE_KEYS:
        name, field_name = key.split(".")
        value = getattr(sections[name], field_name)
        if not _DEVICE.match(str(value)):
            raise ConfigError(f"{key}: {value!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    for key, hooks in (("sae.hooks", params.sae.hooks), ("sae.extra_hooks", params.sae.extra_hooks)):
        for i, hook in enumerate(hooks):
            if hook not in params.harvest.hooks:
                raise ConfigError(f"{key}[{i}]: {hook!r} is not harvested; add it to harvest.hooks (now {params.harvest.hooks})")
    for name in SELECTING_SECTIONS:
        cfg = sections[name]
        check_selection(name, cfg.hooks, cfg.widths, params.sae, single=name in SINGLE_SAE_SECTIONS)
    width = params.earlier_components.widths[0]
    for i, hook in enumerate(params.earlier_components.sources):
        Hook.parse(hook, f"earlier_components.sources[{i}]")
        if not params.sae.has(hook, width):
            raise ConfigError(f"earlier_components.sources[{i}]: {hook!r} has no SAE of width {width} (earlier_components.widths); "
                              f"add it to sae.hooks or sae.extra_hooks")
    params.interventions.check_positions(params.tokens.context_length, params.tokens.skip_positions)
    return params


def load_checked_params(path: Path | str = PARAMS_FILE) -> Params:
    return check_params(load_params(path))
