"""DVC stage `contours`: the (width, L0) contours of nonlinear FVU and both R² at each hook of
`sae.k_hooks` (pipeline/contours.py); without `sae.ks` it writes an empty table and no figure."""

import argparse
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.contours import draw_contours, read_grid
from pipeline.params_check import load_checked_params
from stages.common import run_and_exit, stage, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--metrics-dir", "--figures", "--out"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    with stage("contours", reads=["params.yaml:sae", str(args.metrics_dir)], writes=[str(args.figures), str(args.out)]):
        cfg = load_checked_params().sae
        if cfg.ks and len(cfg.widths) < 2:
            raise ConfigError(f"sae.widths: a width x k grid (sae.ks) needs at least two widths to draw contours, got {cfg.widths}")
        args.figures.mkdir(parents=True, exist_ok=True)
        grids = {}
        for hook in cfg.k_hooks:
            grids[hook] = read_grid(cfg, hook, args.metrics_dir)
            draw_contours(grids[hook], hook, args.figures / f"{hook}.png")
            for row in grids[hook]:
                print(f"contours {row['sae']}: L0 {row['l0']:.1f}, nonlinear FVU {row['nonlinear_fvu']:.4f}, "
                      f"R² e {row['error_vector_r2']:.3f}, R² ‖e‖ {row['error_norm_r2']:.3f}")
        write_json(args.out, {"grids": grids})


if __name__ == "__main__":
    run_and_exit(main)
