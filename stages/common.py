"""Shared plumbing for stage scripts: logging of what a stage read, wrote and how long it took,
and the writers of metrics files (finite numbers only, at a fixed precision)."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipeline.config import ConfigError

log = logging.getLogger("stage")

SIGNIFICANT_DIGITS = 6
"""Metrics are written at this precision: far above run-to-run noise (a rerun from scratch moves
only the last of ~16 digits), so a rerun rewrites identical files and `dvc metrics diff` shows
only real changes."""
METRIC_RTOL = 0.5 * 10 ** (1 - SIGNIFICANT_DIGITS)
"""The largest relative difference between a written metric and the number computed."""


class NonFiniteMetricError(ValueError):
    """A metric about to be written is NaN or infinite."""


def process_age() -> float | None:
    """Seconds since this process started (interpreter start-up plus imports, when called first
    thing), from /proc; None where there is no /proc."""
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def stage(name: str, reads: list[str], writes: list[str]) -> Iterator[None]:
    """Log the stage's inputs and outputs, how long the process took to get here (start-up and
    imports: benchmarks/dag_overhead.py reads it) and its own wall time; turn a ConfigError into
    exit code 2."""
    age = process_age()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    log.info("%s: reads %s (started %s s ago)", name, ", ".join(reads), "?" if age is None else f"{age:.2f}")
    started = time.perf_counter()
    try:
        yield
    except ConfigError as exc:
        log.error("%s: configuration error: %s", name, exc)
        sys.exit(2)
    except NonFiniteMetricError as exc:
        log.error("%s: %s; nothing was written. Its inputs: %s. Check them (python -m pipeline.store_integrity "
                  "verifies the stores' checksums)", name, exc, ", ".join(reads))
        sys.exit(3)
    log.info("%s: wrote %s in %.1f s", name, ", ".join(writes), time.perf_counter() - started)


def run_and_exit(main: Callable[[], None]) -> None:
    """A stage script's entry point: run `main`, then end the process at once. Every output is
    written and closed when `main` returns; the interpreter's own teardown (finalising torch,
    sae-lens and their imports) would add up to 1.3 s per stage for nothing."""
    main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rounded(value: Any, where: str) -> Any:
    """`value` with every float at SIGNIFICANT_DIGITS; raises on NaN or infinity, naming `where`."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonFiniteMetricError(f"{where} is {value}")
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy scalar
        return rounded(value.item(), where)
    return value


def shown(value: float | None, digits: int = 2) -> str:
    """A metric for a log line or a figure title; None (an undefined ratio) is 'undefined'."""
    return "undefined" if value is None else f"{value:.{digits}f}"


def write_json(path: Path | str, payload: dict) -> None:
    """A metrics file: finite numbers only, SIGNIFICANT_DIGITS each (checked before anything is written)."""
    path = Path(path)
    text = json.dumps(rounded(payload, str(path)), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_csv(path: Path | str, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A plot's table: like write_json, every number finite and at SIGNIFICANT_DIGITS ("" = no value)."""
    path = Path(path)
    checked = [[rounded(v, f"{path}: row {i}, column {header[j]}") for j, v in enumerate(row)] for i, row in enumerate(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(checked)


def write_log(path: Path | str, payload: dict) -> None:
    """Run facts that vary between runs (timings, resume points): a log, never a committed metric."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def per_sae_arguments(description: str, extra: tuple[tuple[str, type], ...] = (), store_out: bool = True,
                      sae: bool = True) -> argparse.Namespace:
    """Command line of a stage that runs once per SAE over one hook's activation store
    (plus the required `extra` options, e.g. (("--tokens", Path),); `--sae` if it runs the SAE,
    `--out` if it writes a store)."""
    parser = argparse.ArgumentParser(description=description)
    for option, kind in extra:
        parser.add_argument(option, type=kind, required=True)
    parser.add_argument("--hook", required=True)
    parser.add_argument("--activations", type=Path, required=True)
    if sae:
        parser.add_argument("--sae", type=Path, required=True)
    if store_out:
        parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    return parser.parse_args()
