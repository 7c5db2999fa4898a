"""DVC stage `train_sae` (one per hook x width): train an SAE with sae-lens, or fetch a pretrained one."""

import argparse
import dataclasses
import shutil
from dataclasses import fields
from pathlib import Path

from pipeline.activation_store import open_store, store_path
from pipeline.config import ConfigError, Hook
from pipeline.params_check import load_checked_params
from pipeline.row_split import RowSplit
from pipeline.saes import CurvePoint, load_pretrained, save_sae, train_sae
from stages.common import run_and_exit, stage, write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hook", required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--activations", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--curve", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, help="where training checkpoints wait (kept across kills)")
    parser.add_argument("--k", type=int, default=None, help="an SAE of the width x k grid (sae.ks): this k, not sae.k")
    args = parser.parse_args()
    store = store_path(args.activations, args.hook)
    with stage("train_sae", reads=["params.yaml:sae,train_sae", str(store)], writes=[str(args.out), str(args.curve)]):
        params = load_checked_params()
        cfg, train = params.sae, params.train_sae
        if args.k is not None:
            if args.k not in cfg.ks:
                raise ConfigError(f"--k {args.k}: not one of sae.ks {cfg.ks}")
            cfg = dataclasses.replace(cfg, k=args.k, ks=[], k_hooks=[])  # this SAE at its k; the grid is the DAG's business
        hook = Hook.parse(args.hook, "--hook")
        acts = open_store(store)
        metadata = {"model_name": acts.attrs["model"], "hook_name": hook.name, "prepend_bos": True}
        if cfg.source == "pretrained":
            sae = load_pretrained(cfg, hook, args.width, d_in=acts.shape[1])
            curve: list[CurvePoint] = []
        else:
            sae, curve = train_sae(acts, RowSplit.of(acts).sae_train_rows.stop, args.width, cfg, train, metadata,
                                   checkpoints=args.checkpoints)
        header = [f.name for f in fields(CurvePoint)]
        write_csv(args.curve, header, ([getattr(point, h) for h in header] for point in curve))
        save_sae(sae, args.out)
        if args.checkpoints:
            shutil.rmtree(args.checkpoints, ignore_errors=True)
        if curve:
            last = curve[-1]
            print(f"train_sae {hook.name} w={args.width}: {last.tokens} tokens, explained variance {last.explained_variance:.3f}, "
                  f"L0 {last.l0:.1f}, dead {last.dead_fraction:.1%} -> {args.out}")


if __name__ == "__main__":
    run_and_exit(main)
