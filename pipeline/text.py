"""Document sources: an iterator of plain-text documents per `data.source`.

- 'pydoc': the English prose CPython ships, offline: the pydoc topics (the language reference
  and library manual excerpts behind `help()`) and the docstrings of the standard library,
  read with `ast` (no module is imported). Paragraphs are re-flowed, code-heavy ones dropped,
  and exact duplicates removed.
- 'datasets': `datasets.load_dataset(..., streaming=True)`: the Pile, OpenWebText, or local
  json/jsonl/text files through the same call.
"""

from __future__ import annotations

import ast
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


def pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]


def stdlib_docstrings() -> Iterator[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(root).parts):
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


def clean_document(text: str, cfg: DataConfig, seen: set[str]) -> str:
    """Keep the prose paragraphs of `text` not already in `seen` (updated), re-flowed to one line each."""
    kept = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if line.strip() and not _UNDERLINE.match(line)]
        # In pydoc/reST text, prose is indented by at most 3 spaces; deeper blocks are code or tables.
        if not lines or min(len(line) - len(line.lstrip()) for line in lines) > 3:
            continue
        if not _is_prose("\n".join(lines), cfg):
            continue
        paragraph = " ".join(line.strip() for line in lines)
        if paragraph in seen:
            continue
        seen.add(paragraph)
        kept.append(paragraph)
    return "\n\n".join(kept)


def pydoc_documents(cfg: DataConfig, seed: int) -> list[str]:
    """All cleaned pydoc documents, in an order shuffled by `seed` (the corpus is small)."""
    seen: set[str] = set()
    docs = [
        doc for doc in (clean_document(raw, cfg, seen) for raw in _chain(pydoc_topics(), stdlib_docstrings())) if doc
    ]
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
    return datasets_documents(cfg, seed)
