"""Shared plumbing for stage scripts: logging of what a stage read, wrote and how long it took."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.config import ConfigError

log = logging.getLogger("stage")


@contextmanager
def stage(name: str, reads: list[str], writes: list[str]) -> Iterator[None]:
    """Log the stage's inputs and outputs and its wall time; turn a ConfigError into exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    log.info("%s: reads %s", name, ", ".join(reads))
    started = time.perf_counter()
    try:
        yield
    except ConfigError as exc:
        log.error("%s: configuration error: %s", name, exc)
        sys.exit(2)
    log.info("%s: wrote %s in %.1f s", name, ", ".join(writes), time.perf_counter() - started)


def write_json(path: Path | str, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def per_sae_arguments(description: str, extra: tuple[tuple[str, type], ...] = (), store_out: bool = True) -> argparse.Namespace:
    """Command line of a stage that runs once per SAE over one hook's activation store
    (plus the required `extra` options, e.g. (("--tokens", Path),); `--out` if it writes a store)."""
    parser = argparse.ArgumentParser(description=description)
    for option, kind in extra:
        parser.add_argument(option, type=kind, required=True)
    parser.add_argument("--hook", required=True)
    parser.add_argument("--activations", type=Path, required=True)
    parser.add_argument("--sae", type=Path, required=True)
    if store_out:
        parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    return parser.parse_args()
