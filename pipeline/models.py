"""Materialise a causal LM as a plain local checkpoint, and load it back fast.

Two sources share one code path after loading:
- a GGUF file shipped inside a Python package, de-quantised once by transformers: either as a
  file in the package's folder (the embedded default, SmolLM2-135M), or in chunks that the
  package's `assemble(output_path=...)` joins and checks (Gemma 3 270M);
- `from_pretrained` of a HuggingFace hub id or a local directory (GPT-2, Gemma 2, Llama 3.1).
The result is always `config.json` + safetensors + tokenizer files + `checkpoint.json`, which
`load_model` reads in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch

from pipeline.config import ConfigError, ModelConfig

CHECKPOINT_INFO = "checkpoint.json"
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _gguf_package_dir(cfg: ModelConfig) -> Path:
    spec = importlib.util.find_spec(cfg.package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model.package: Python package {cfg.package!r} is not installed "
            f"(`make install` installs the packages of conf/model/smollm2_135m.yaml and gemma3_270m.yaml)"
        )
    return Path(spec.origin).parent


@contextmanager
def gguf_location(cfg: ModelConfig) -> Iterator[Path]:
    """The GGUF file of a `gguf_package` model, for the duration of the `with` block.

    A package either holds the file in its folder, or holds it in chunks and exposes
    `assemble(output_path=...)`, which joins them and checks the whole file's SHA-256. The assembled
    file lives in a temporary folder and is deleted afterwards: the checkpoint is what persists.
    """
    folder = _gguf_package_dir(cfg)
    path = folder / cfg.gguf_file
    if path.exists():
        yield path
        return
    package = importlib.import_module(cfg.package)
    if not callable(getattr(package, "assemble", None)):
        shipped = sorted(p.name for p in folder.glob("*.gguf"))
        raise ConfigError(
            f"model.gguf_file: {cfg.gguf_file!r} is not in package {cfg.package!r}, which ships {shipped} "
            f"and has no assemble() to build it"
        )
    with tempfile.TemporaryDirectory(prefix="gguf-") as tmp:
        assembled = Path(package.assemble(output_path=Path(tmp) / cfg.gguf_file))
        if assembled.name != cfg.gguf_file:
            raise ConfigError(f"model.gguf_file: {cfg.package}.assemble() built {assembled.name!r}, not {cfg.gguf_file!r}")
        yield assembled


def _resolve_pretrained(cfg: ModelConfig):
    """Check that `model.path` names a local model directory or a hub id, before loading weights."""
    from transformers import AutoConfig

    local = Path(cfg.path).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ConfigError(
                f"model.path: directory {str(local)!r} has no config.json; it is not a HuggingFace model directory"
            )
        return AutoConfig.from_pretrained(local), str(local)
    try:
        return AutoConfig.from_pretrained(cfg.path, revision=cfg.revision), cfg.path
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors for unknown ids
        raise ConfigError(
            f"model.path: {cfg.path!r} is neither a local model directory nor a model id the hub could "
            f"resolve ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"Known configs: conf/model/*.yaml"
        ) from None


def load_source_model(cfg: ModelConfig):
    """Load (model, tokenizer) from the configured source, in `cfg.checkpoint_dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = TORCH_DTYPES[cfg.checkpoint_dtype]
    if cfg.source == "gguf_package":
        with gguf_location(cfg) as path:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        # A GGUF-loaded model refuses save_pretrained: rebuild a plain model of the same config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are de-quantised now
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
        plain.load_state_dict(gguf_model.state_dict())
        return plain, tokenizer
    _, where = _resolve_pretrained(cfg)
    revision = None if Path(where).is_dir() else cfg.revision
    tokenizer = AutoTokenizer.from_pretrained(where, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(where, revision=revision, dtype=dtype)
    return model, tokenizer


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def materialise(cfg: ModelConfig, out_dir: Path) -> dict:
    """Write the configured model as a plain safetensors checkpoint + tokenizer into `out_dir`.

    Writes into a sibling temporary directory and renames it at the end, so a crash never
    leaves a half-written checkpoint that looks complete.
    """
    out_dir = Path(out_dir)
    model, tokenizer = load_source_model(cfg)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # transformers saves whether HF_HUB_OFFLINE was set as `local_files_only`: fix it (the checkpoint
    # is local), so that the checkpoint's bytes, and with them every later stage, do not depend on it.
    tokenizer.init_kwargs["local_files_only"] = True
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    weights = sorted(tmp.glob("*.safetensors"))
    info = {
        "model": asdict(cfg),
        "model_type": model.config.model_type,
        "n_layers": model.config.num_hidden_layers,
        "d_model": model.config.hidden_size,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": {w.name: _file_sha256(w) for w in weights},
    }
    (tmp / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info


def checkpoint_info(model_dir: Path) -> dict:
    path = Path(model_dir) / CHECKPOINT_INFO
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the `model` stage first (dvc repro model)")
    return json.loads(path.read_text())


def checkpoint_fingerprint(model_dir: Path) -> str:
    weights = checkpoint_info(model_dir)["weights_sha256"]
    return hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:16]


def load_model(model_dir: Path, dtype: str = "float32", device: str = "cpu"):
    """Load a materialised checkpoint for inference (eval mode, no grad bookkeeping)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=TORCH_DTYPES[dtype])
    model.to(device).eval()
    model.requires_grad_(False)
    return model


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "tekken.json")


def load_tokenizer(model_dir: Path):
    """The checkpoint's tokenizer; a directory without one is an error that says so (transformers
    would otherwise fail with a message about sentencepiece, or fall back to something else)."""
    from transformers import AutoTokenizer

    path = Path(model_dir)
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{path}: no tokenizer files (expected one of {list(TOKENIZER_FILES)}); the `model` stage copies them with "
            f"the weights: check model.path / model.package, then `dvc repro -f -s model`"
        )
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: its tokenizer does not load ({str(exc).splitlines()[0]})") from exc


def load_model_config(model_dir: Path):
    """The model's HF config alone (no weights): for validating layers and lengths up front."""
    from transformers import AutoConfig

    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path / 'config.json'}: missing; run the `model` stage first (dvc repro model)")
    return AutoConfig.from_pretrained(path)


def max_positions(hf_config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int):
            return value
    return None
