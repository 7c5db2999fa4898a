"""DVC stage `report`: the static HTML report (`reports/index.html`, images in `reports/img/`)
from every metrics file, figure and params.yaml."""

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.report import write_report
from stages.common import run_and_exit, stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--metrics-dir", "--figures", "--out"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    with stage("report", reads=["params.yaml", str(args.metrics_dir), str(args.figures)], writes=[str(args.out)]):
        index = write_report(args.metrics_dir, args.figures, load_params(), args.out)
        print(f"report: {index.resolve()}")


if __name__ == "__main__":
    run_and_exit(main)
