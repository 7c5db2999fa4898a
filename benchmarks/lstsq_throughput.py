"""The streaming least-squares engine against sklearn and torch.linalg.lstsq, and its peak memory.

    python benchmarks/lstsq_throughput.py [--rows 200000] [--d 576]

Random data with a planted linear map (the task of the linear-error probe: d -> d). Prints the
seconds of each solver on the same in-memory arrays, the ratios, the largest |R^2 difference|,
and the engine's peak RSS when it streams 1x and 4x the rows from a Zarr store (each in a fresh
process).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.lstsq import FitScore, NormalEquations  # noqa: E402


def make_data(rows: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, d), dtype=np.float32) + 3).astype(np.float32)
    A = (rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    y = x @ A + rng.standard_normal((rows, d), dtype=np.float32)
    return x, y


def engine(x: np.ndarray, y: np.ndarray, block: int = 4096):
    eq = NormalEquations(bias=True)
    for i in range(0, len(x), block):
        eq.update(x[i : i + block], y[i : i + block])
    fit = eq.solve()
    score = FitScore()
    for i in range(0, len(x), block):
        score.update(y[i : i + block], fit.predict(x[i : i + block]))
    return score.r2_dims


def r2_dims(y: np.ndarray, y_hat: np.ndarray) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y, y_hat, multioutput="uniform_average"))


def sklearn_fit(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(x, y)
    return r2_dims(y, model.predict(x))


def torch_fit(x: np.ndarray, y: np.ndarray) -> float:
    xt = torch.from_numpy(np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)]))
    solution = torch.linalg.lstsq(xt, torch.from_numpy(y)).solution
    return r2_dims(y, (xt @ solution).numpy())


def timed(fn, *args) -> tuple[float, float]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def write_stores(rows: int, d: int, work: Path) -> tuple[Path, Path]:
    import zarr

    paths = work / f"x{rows}.zarr", work / f"y{rows}.zarr"
    xs, ys = (zarr.create_array(p, shape=(rows, d), chunks=(8192, d), dtype="float32") for p in paths)
    for i in range(0, rows, 65536):
        x, y = make_data(min(65536, rows - i), d, seed=i)
        xs[i : i + len(x)] = x
        ys[i : i + len(y)] = y
    return paths


def peak_rss_streaming(x_path: Path, y_path: Path) -> float:
    """Peak RSS of a fresh process that fits by streaming the two stores in 8192-row blocks.

    Read from /proc's VmHWM: ru_maxrss would include the parent's memory at fork time."""
    code = f"""
import sys, zarr
sys.path.insert(0, {str(ROOT)!r})
from pipeline.activation_store import iter_row_blocks
from pipeline.lstsq import NormalEquations
xs, ys = zarr.open_array({str(x_path)!r}, mode="r"), zarr.open_array({str(y_path)!r}, mode="r")
eq = NormalEquations()
for (first, x), (_, y) in zip(iter_row_blocks(xs), iter_row_blocks(ys)):
    eq.update(x, y)
eq.solve()
print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=576)
    args = parser.parse_args()
    x, y = make_data(args.rows, args.d)
    print(
        f"{args.rows} rows, d = {args.d} -> {args.d} targets, fit + score on the same rows, torch threads {torch.get_num_threads()}"
    )
    results = {
        "streaming engine (float64 normal equations)": timed(engine, x, y),
        "sklearn LinearRegression": timed(sklearn_fit, x, y),
        "torch.linalg.lstsq (float32, as the study)": timed(torch_fit, x, y),
    }
    base = results["streaming engine (float64 normal equations)"]
    for name, (seconds, r2) in results.items():
        print(f"  {name:45s} {seconds:7.2f} s   R2_dims {r2:.9f}   engine speed-up x{seconds / base[0]:.1f}")
    print(f"  |R2 engine - R2 sklearn| = {abs(base[1] - results['sklearn LinearRegression'][1]):.1e}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (args.rows, 4 * args.rows):
            rss = peak_rss_streaming(*write_stores(rows, args.d, Path(tmp)))
            print(f"  peak RSS streaming {rows:8d} rows from Zarr: {rss:7.0f} MB")


if __name__ == "__main__":
    main()
