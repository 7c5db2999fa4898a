"""Are the run's SAEs trained enough? Trains each SAE of one hook again on twice the distinct
tokens for twice the steps, and compares.

For each width of `--hook` (default: the focus hook, earlier_components.hooks[0]) it reports:
- test FVU of the run's SAE and of the 2x variant, both on the run's test rows (computed here as
  `sae_outputs` does; tests/test_convergence.py holds it equal to metrics/sae/<name>.json), and
  their relative difference (criterion: within 5%);
- the run's SAE's FVU on its own training rows against its test FVU: the relative train-test gap
  (criterion: within 5%; a larger gap is overfitting to too few distinct tokens).

The 2x variant trains on the run's SAE-training rows plus as many new ones: the contexts that
follow the run's in the same corpus stream (never a fit or test context), harvested here with the
run's own `harvest` and `lm` settings. Every other setting is the run's (`sae`, `train_sae`), with
`train_sae.tokens` doubled. Run it after `make repro`, from the repository root:

    python benchmarks/convergence.py [--hook H] [--widths W ...] [--out metrics/convergence.json]

It writes the comparison to `--out` and prints it; the report shows it once rebuilt
(`dvc repro -f -s report`: the file is not a stage output, so DVC does not track it). Cost on the project's
2-core CPU at the default scale: about 2x the training time of the hook's SAEs, plus one harvest
of the extra contexts up to that layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.activation_store import iter_row_blocks, open_store, store_path  # noqa: E402
from pipeline.config import Hook  # noqa: E402
from pipeline.harvest import harvest  # noqa: E402
from pipeline.models import checkpoint_info, load_tokenizer  # noqa: E402
from pipeline.params_check import load_checked_params  # noqa: E402
from pipeline.row_split import RowSplit  # noqa: E402
from pipeline.sae_config import sae_name  # noqa: E402
from pipeline.sae_inference import encode_decode, load_sae  # noqa: E402
from pipeline.sae_output_store import MetricAccumulator  # noqa: E402
from pipeline.saes import save_sae, train_sae  # noqa: E402
from pipeline.text import documents  # noqa: E402
from pipeline.tokens import TokenStore, bos_token_id, token_stream_contexts, write_token_store  # noqa: E402

TOLERANCE = 0.05
"""Both criteria: relative difference at most 5%."""


def fvu(sae, acts: zarr.Array, start: int, stop: int, block_rows: int = 8192) -> float:
    """FVU of `sae` on store rows [start, stop), as `sae_outputs` computes it (float64 sums)."""
    acc = MetricAccumulator(acts.shape[1], sae.cfg.d_sae)
    with torch.no_grad():
        for _, block in iter_row_blocks(acts, start, stop, rows=block_rows):
            x = torch.from_numpy(np.asarray(block, dtype=np.float32))
            latents, x_hat = encode_decode(sae, x)
            fired = (latents != 0).any(0).numpy()
            acc.update(x.numpy(), (x - x_hat).numpy(), (latents != 0).sum(-1).numpy(), fired)
    return acc.result().fvu


def new_contexts(params, tokens: TokenStore, model_dir: Path) -> tuple[np.ndarray, int]:
    """As many contexts as the run's SAE split, from the corpus stream after the run's contexts, and
    the BOS id. The first context after the run's is skipped: it may continue a test context's document."""
    n_new = tokens.n_sae_contexts
    longer = dataclasses.replace(params.tokens, n_contexts=tokens.n_contexts + 1 + n_new)
    tokenizer = load_tokenizer(model_dir)
    bos = bos_token_id(tokenizer, params.model.bos_token)
    stream = token_stream_contexts(documents(params.data, params.tokens.seed), tokenizer, longer, bos, params.data.name)
    return stream[tokens.n_contexts + 1:], bos


def harvest_extra(params, hook: Hook, tokens: TokenStore, model_dir: Path, work: Path) -> zarr.Array:
    """The hook's activations on the new contexts (every one an SAE-training context)."""
    contexts, bos = new_contexts(params, tokens, model_dir)
    n = len(contexts)
    token_store = work / "tokens.zarr"
    # The store's split is never read here (harvest writes every context's rows; all of them train
    # the 2x variant); a token store needs a non-empty split of each kind, hence n - 2 / n - 1.
    write_token_store(token_store, contexts, n - 1, params.tokens, params.data, bos,
                      checkpoint_info(model_dir)["model"]["name"], n_sae=n - 2)
    cfg = dataclasses.replace(params.harvest, hooks=[hook.name])
    harvest(model_dir, token_store, work / "activations", cfg, params.lm, work / "scratch", progress=False)
    return open_store(store_path(work / "activations", hook))


def doubled_training_rows(run_acts: zarr.Array, n_run: int, extra: zarr.Array, path: Path) -> zarr.Array:
    """A store of the run's SAE-training rows followed by the extra rows (the 2x variant's data)."""
    n_extra = extra.shape[0]
    out = zarr.create_array(path, shape=(n_run + n_extra, run_acts.shape[1]), chunks=run_acts.chunks, dtype=run_acts.dtype)
    row = 0
    for source, stop in ((run_acts, n_run), (extra, n_extra)):
        for _, block in iter_row_blocks(source, 0, stop, rows=run_acts.chunks[0]):
            out[row : row + len(block)] = block
            row += len(block)
    return out


def run_settings(params) -> dict:
    """The params that decide the checked SAEs: the report shows the check only for a run that has them all."""
    return {"model.name": params.model.name, "data.name": params.data.name, "data.packages": list(params.data.packages),
            "tokens": dataclasses.asdict(params.tokens), "harvest.store_dtype": params.harvest.store_dtype,
            "lm.compute_dtype": params.lm.compute_dtype, "sae.architecture": params.sae.architecture, "sae.k": params.sae.k,
            "train_sae": dataclasses.asdict(params.train_sae)}


def relative(a: float, b: float) -> float:
    return (a - b) / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hook", default=None, help="default: earlier_components.hooks[0] (the focus hook)")
    parser.add_argument("--widths", type=int, nargs="*", default=None, help="default: every width of sae.widths")
    parser.add_argument("--out", type=Path, default=Path("metrics/convergence.json"))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--wait", action="store_true", help="wait for the run's SAEs (when started beside `dvc repro`)")
    args = parser.parse_args()

    params = load_checked_params()
    hook = Hook.parse(args.hook or params.earlier_components.hooks[0], "--hook")
    widths = args.widths or [w for h, w in params.sae.pairs() if h == hook.name]
    model_dir, started = args.artifacts / "model", time.time()
    run_acts = open_store(store_path(args.artifacts / "activations", hook))
    split = RowSplit.of(run_acts)
    n_run = split.sae_train_rows.stop
    tokens = TokenStore.open(args.artifacts / "tokens.zarr")
    doubled_train = dataclasses.replace(params.train_sae, tokens=2 * params.train_sae.tokens)
    rows = []
    with tempfile.TemporaryDirectory(prefix="convergence-", dir=".") as tmp:
        work = Path(tmp)
        extra = harvest_extra(params, hook, tokens, model_dir, work)
        data = doubled_training_rows(run_acts, n_run, extra, work / "doubled.zarr")
        print(f"convergence {hook.name}: run {n_run} distinct SAE-training rows, 2x variant {data.shape[0]}; "
              f"harvest {time.time() - started:.0f} s", flush=True)
        for width in widths:
            name = sae_name(hook.name, width)
            t0 = time.time()
            trained, _ = train_sae(data, data.shape[0], width, params.sae, doubled_train,
                                   {"model_name": run_acts.attrs["model"], "hook_name": hook.name, "prepend_bos": True}, progress=False)
            save_sae(trained, work / name)
            doubled_fvu = fvu(load_sae(work / name), run_acts, split.n_train_rows, split.n_rows)
            shutil.rmtree(work / name)
            while args.wait and not (args.artifacts / "saes" / name / "cfg.json").exists():
                time.sleep(30)  # started beside a `dvc repro` that has not trained this SAE yet
            run_sae = load_sae(args.artifacts / "saes" / name)
            test_fvu = fvu(run_sae, run_acts, split.n_train_rows, split.n_rows)
            train_fvu = fvu(run_sae, run_acts, 0, n_run)
            row = {
                "sae": name,
                "width": width,
                "distinct_tokens": n_run,
                "samples": params.train_sae.tokens,
                "epochs": params.train_sae.tokens / n_run,
                "train_fvu": train_fvu,
                "test_fvu": test_fvu,
                "train_test_gap": relative(test_fvu, train_fvu),
                "doubled_test_fvu": doubled_fvu,
                "doubled_distinct_tokens": int(data.shape[0]),
                "doubled_samples": doubled_train.tokens,
                "test_fvu_vs_doubled": relative(test_fvu, doubled_fvu),
                "doubled_train_seconds": time.time() - t0,
            }
            row["converged"] = abs(row["train_test_gap"]) <= TOLERANCE and abs(row["test_fvu_vs_doubled"]) <= TOLERANCE
            rows.append(row)
            print(f"{name}: test FVU {test_fvu:.4f}, 2x variant {doubled_fvu:.4f} ({row['test_fvu_vs_doubled']:+.1%}); "
                  f"train FVU {train_fvu:.4f}, gap {row['train_test_gap']:+.1%}; converged: {row['converged']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"hook": hook.name, "tolerance": TOLERANCE, "saes": rows, "settings": run_settings(params),
                                    "seconds": time.time() - started}, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s; `dvc repro -f -s report` shows it in the report")


if __name__ == "__main__":
    main()
