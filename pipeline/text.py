"""Document sources: an iterator of plain-text documents per `data.source`.

- 'pydoc': the English prose CPython ships, offline: the pydoc topics (the language reference
  and library manual excerpts behind `help()`) and the docstrings of the standard library,
  read with `ast` (no module is imported). Paragraphs are re-flowed, code-heavy ones dropped,
  and exact duplicates removed.
- 'docstrings': pydoc's text plus the docstrings of the installed packages named in
  `data.packages` (torch, transformers, scipy, ...: this project's own dependencies, so every
  machine that runs it has them), read and cleaned the same way: about 3M distinct tokens,
  enough for SAEs trained on hundreds of thousands of tokens that none of the analyses see.
  `python -m pipeline.text` prints its size, what deduplication removed, and a sample.
- 'datasets': `datasets.load_dataset(..., streaming=True)`: the Pile, OpenWebText, or local
  json/jsonl/text files through the same call.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import random
import re
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

from pipeline.config import ConfigError, DataConfig

_CODE_SYMBOLS = set("{}[]()=<>;_*#@`|\\/$%^~")
_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_PROMPT = re.compile(r"^\s*(>>>|\.\.\.|\$ |%)")
# Standard-library folders that are tests, demos or vendored code rather than documented API.
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "turtledemo",
    "__pycache__",
    "ensurepip",
}
# The same for installed packages: their tests, examples, benchmarks and vendored copies.
_SKIP_PACKAGE_DIRS = {"test", "tests", "testing", "_vendor", "vendor", "vendored", "examples", "benchmarks", "__pycache__"}


def pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]


def stdlib_docstrings() -> Iterator[str]:
    return _docstrings_under(Path(sysconfig.get_paths()["stdlib"]), _SKIP_DIRS)


def package_folders(packages: list[str]) -> list[Path]:
    """The source folders of installed packages, found without importing them."""
    folders = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"data.packages: {package!r} is not an installed package (a folder with modules); "
                              "name packages this project depends on, e.g. torch, transformers, scipy")
        folders.extend(Path(location) for location in spec.submodule_search_locations)
    return folders


def package_docstrings(packages: list[str]) -> Iterator[str]:
    """The docstrings of the installed packages' source files (tests and vendored code excluded)."""
    for folder in package_folders(packages):  # all resolved first: a missing package fails at once
        yield from _docstrings_under(folder, _SKIP_PACKAGE_DIRS)


def _docstrings_under(root: Path, skip_dirs: set[str]) -> Iterator[str]:
    """Module, class and function docstrings of every .py file under `root`, read with `ast`."""
    for path in sorted(root.rglob("*.py")):
        if skip_dirs.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def _is_prose(paragraph: str, cfg: DataConfig) -> bool:
    lines = paragraph.splitlines()
    if any(_PROMPT.match(line) for line in lines):
        return False
    if len(paragraph.split()) < cfg.min_words:
        return False
    symbols = sum(ch in _CODE_SYMBOLS for ch in paragraph)
    return symbols / max(1, len(paragraph)) <= cfg.max_symbol_fraction


def prose_paragraphs(text: str, cfg: DataConfig) -> list[str]:
    """The prose paragraphs of `text`, re-flowed to one line each (duplicates included)."""
    kept = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if line.strip() and not _UNDERLINE.match(line)]
        # In pydoc/reST text, prose is indented by at most 3 spaces; deeper blocks are code or tables.
        if not lines or min(len(line) - len(line.lstrip()) for line in lines) > 3:
            continue
        if _is_prose("\n".join(lines), cfg):
            kept.append(" ".join(line.strip() for line in lines))
    return kept


def clean_document(text: str, cfg: DataConfig, seen: set[str]) -> str:
    """Keep the prose paragraphs of `text` not already in `seen` (updated), re-flowed to one line each."""
    kept = []
    for paragraph in prose_paragraphs(text, cfg):
        if paragraph not in seen:
            seen.add(paragraph)
            kept.append(paragraph)
    return "\n\n".join(kept)


def pydoc_documents(cfg: DataConfig, seed: int) -> list[str]:
    """All cleaned pydoc documents, in an order shuffled by `seed` (the corpus is small)."""
    return _cleaned_and_shuffled(_chain(pydoc_topics(), stdlib_docstrings()), cfg, seed)


def docstring_documents(cfg: DataConfig, seed: int) -> list[str]:
    """pydoc's documents and the cleaned docstrings of `cfg.packages`, deduplicated across all of
    them (a paragraph is kept once, where it first appears), in an order shuffled by `seed`."""
    package_folders(cfg.packages)  # fail before the slow part
    raw = _chain(pydoc_topics(), stdlib_docstrings(), package_docstrings(cfg.packages))
    return _cleaned_and_shuffled(raw, cfg, seed)


def _cleaned_and_shuffled(raw: Iterable[str], cfg: DataConfig, seed: int) -> list[str]:
    seen: set[str] = set()
    docs = [doc for doc in (clean_document(text, cfg, seen) for text in raw) if doc]
    random.Random(seed).shuffle(docs)
    return docs


def _chain(*iterables: Iterable[str]) -> Iterator[str]:
    for iterable in iterables:
        yield from iterable


def datasets_documents(cfg: DataConfig, seed: int) -> Iterator[str]:
    import datasets

    try:
        stream = datasets.load_dataset(
            cfg.path, name=cfg.config_name, data_files=cfg.data_files, split=cfg.split, streaming=True
        )
    except FileNotFoundError as exc:
        raise ConfigError(f"data.data_files / data.path: {exc}") from None
    if cfg.shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=cfg.shuffle_buffer)
    for i, row in enumerate(stream):
        if cfg.text_field not in row:
            raise ConfigError(
                f"data.text_field: {cfg.text_field!r} is not a column of {cfg.path!r}; columns: {sorted(row)}"
            )
        text = row[cfg.text_field]
        if text and text.strip():
            yield text


def documents(cfg: DataConfig, seed: int) -> Iterator[str]:
    if cfg.source == "pydoc":
        return iter(pydoc_documents(cfg, seed))
    if cfg.source == "docstrings":
        return iter(docstring_documents(cfg, seed))
    return datasets_documents(cfg, seed)


def corpus_statistics(cfg: DataConfig, tokenizer, sample: int = 5, seed: int = 0) -> dict:
    """What a docstrings/pydoc corpus holds: documents, paragraphs kept and dropped as exact
    duplicates or as non-prose, distinct tokens (the `tokenizer`'s), and `sample` documents."""
    raw = list(_chain(pydoc_topics(), stdlib_docstrings(), package_docstrings(cfg.packages)))
    seen: set[str] = set()
    paragraphs = duplicates = non_prose = 0
    docs = []
    for text in raw:
        before = len(seen)
        cleaned = clean_document(text, cfg, seen)
        n_blocks = sum(1 for block in re.split(r"\n\s*\n", text) if block.strip())
        n_prose = len(prose_paragraphs(text, cfg))
        paragraphs += n_blocks
        non_prose += n_blocks - n_prose
        duplicates += n_prose - (len(seen) - before)
        if cleaned:
            docs.append(cleaned)
    tokens = sum(len(tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in docs)
    rng = random.Random(seed)
    return {
        "packages": list(cfg.packages),
        "raw_docstrings": len(raw),
        "paragraphs": paragraphs,
        "dropped_not_prose": non_prose,
        "dropped_duplicates": duplicates,
        "documents": len(docs),
        "characters": sum(map(len, docs)),
        "tokens": tokens,
        "sample": rng.sample(docs, min(sample, len(docs))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Size, deduplication and a sample of the offline docstrings corpus.")
    parser.add_argument("--model", default="artifacts/model", help="model directory whose tokenizer counts tokens")
    parser.add_argument("--data-config", default="conf/data/docstrings.yaml", help="a data config of source=docstrings")
    args = parser.parse_args()
    from omegaconf import OmegaConf

    from pipeline.models import load_tokenizer

    cfg = DataConfig(**OmegaConf.to_container(OmegaConf.load(args.data_config)))
    stats = corpus_statistics(cfg, load_tokenizer(Path(args.model)))
    for key, value in stats.items():
        if key != "sample":
            print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
    for doc in stats["sample"]:
        print("---\n" + doc[:600])


if __name__ == "__main__":
    main()
