"""DVC stage `validate`, the first of the DAG: check the whole of params.yaml (every section and
the rules between sections) in about a second, so that a bad value fails, naming its key,
before any model or SAE work starts."""

import argparse
from pathlib import Path

from pipeline.params_check import load_checked_params
from stages.common import run_and_exit, stage

MARKER = "params.yaml passed pipeline.params_check\n"
"""The marker's content never changes: it orders `validate` before `model` without making a
param change rerun the model."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with stage("validate", reads=["params.yaml"], writes=[str(args.out)]):
        params = load_checked_params()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(MARKER)
        print(f"validate: params.yaml is valid ({len(params.sae.names())} SAEs)")


if __name__ == "__main__":
    run_and_exit(main)
