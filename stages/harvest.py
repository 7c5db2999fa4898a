"""DVC stage `harvest`: capture every configured hook in one forward pass into chunked Zarr stores."""

import argparse
from pathlib import Path

from pipeline.harvest import harvest
from pipeline.params_check import load_checked_params
from stages.common import run_and_exit, stage, write_json, write_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True, help="where partial stores wait (kept across kills)")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="timings and resume point (not a metric: not committed)")
    args = parser.parse_args()
    with stage(
        "harvest",
        reads=["params.yaml:harvest,lm", str(args.model), str(args.tokens)],
        writes=[str(args.out), str(args.metrics)],
    ):
        params = load_checked_params()
        cfg = params.harvest
        result = harvest(args.model, args.tokens, args.out, cfg, params.lm, scratch=args.scratch)
        write_json(args.metrics, {"rows": result.n_rows, "hooks": len(cfg.hooks)})
        write_log(
            args.log,
            {
                "rows_computed": result.rows_computed,
                "resumed_from_row": result.resumed_from_row,
                "seconds": round(result.seconds, 2),
                "tokens_per_second": round(result.tokens_per_second, 1),
            },
        )
        print(
            f"harvest: {len(cfg.hooks)} hooks x {result.n_rows} rows; {result.tokens_per_second:.0f} tokens/s "
            f"(resumed from row {result.resumed_from_row}) -> {args.out}"
        )


if __name__ == "__main__":
    run_and_exit(main)
