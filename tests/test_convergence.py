"""benchmarks/convergence.py on the smoke run: the 2x variant trains on twice the distinct rows,
and its FVU function agrees with what `sae_outputs` wrote."""

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run

REPO = Path(__file__).resolve().parents[1]


def test_fvu_matches_sae_outputs(smoke_repo, smoke_params):
    sys.path.insert(0, str(REPO))
    from benchmarks.convergence import fvu
    from pipeline.activation_store import open_store, store_path
    from pipeline.row_split import RowSplit
    from pipeline.sae_inference import load_sae

    hook, width = smoke_params.earlier_components.hooks[0], smoke_params.earlier_components.widths[0]
    acts = open_store(store_path(smoke_repo / "artifacts/activations", hook))
    split = RowSplit.of(acts)
    ours = fvu(load_sae(smoke_repo / f"artifacts/saes/{hook}-{width}"), acts, split.n_train_rows, split.n_rows)
    stored = json.loads((smoke_repo / f"metrics/sae/{hook}-{width}.json").read_text())["fvu"]
    assert ours == pytest.approx(stored, rel=1e-5)  # metrics files keep 6 significant digits


def test_convergence_script_trains_the_doubled_variant(smoke_repo, smoke_params, tmp_path):
    hook, width = smoke_params.earlier_components.hooks[0], smoke_params.earlier_components.widths[0]
    out = tmp_path / "convergence.json"
    result = run([sys.executable, "benchmarks/convergence.py", "--widths", str(width), "--out", str(out)], cwd=smoke_repo)
    assert "converged:" in result.stdout
    report = json.loads(out.read_text())
    (row,) = report["saes"]
    assert report["hook"] == hook and row["width"] == width
    assert row["doubled_samples"] == 2 * row["samples"]
    # The new contexts are as many as the run's SAE contexts; their scored rows differ only by separators.
    assert row["doubled_distinct_tokens"] == pytest.approx(2 * row["distinct_tokens"], rel=0.05)
    stored = json.loads((smoke_repo / f"metrics/sae/{hook}-{width}.json").read_text())["fvu"]
    assert row["test_fvu"] == pytest.approx(stored, rel=1e-5)
    assert 0 < row["train_fvu"] < 1 and 0 < row["doubled_test_fvu"] < 1
    assert row["train_test_gap"] == pytest.approx((row["test_fvu"] - row["train_fvu"]) / row["train_fvu"])
    assert row["converged"] == (abs(row["train_test_gap"]) <= 0.05 and abs(row["test_fvu_vs_doubled"]) <= 0.05)
    assert not list(smoke_repo.glob("convergence-*")), "the work folder is removed"


def test_report_shows_the_check_only_for_the_configuration_it_measured(tmp_path):
    from omegaconf import OmegaConf

    from pipeline.report import ReportInputs, convergence_section

    row = {"sae": "h-576", "width": 576, "distinct_tokens": 1000, "samples": 2000, "epochs": 2.0, "train_fvu": 0.2,
           "test_fvu": 0.21, "train_test_gap": 0.05, "doubled_test_fvu": 0.2, "test_fvu_vs_doubled": 0.05, "converged": True}
    settings = {"train_sae": {"tokens": 2000}, "sae.k": 32}
    (tmp_path / "convergence.json").write_text(json.dumps({"hook": "h", "tolerance": 0.05, "saes": [row], "settings": settings}))
    same = OmegaConf.create({"train_sae": {"tokens": 2000}, "sae": {"k": 32}})
    section = convergence_section(ReportInputs(tmp_path, tmp_path, same))
    assert section.tables[0].rows[0][0] == "h-576"
    other = OmegaConf.create({"train_sae": {"tokens": 4000}, "sae": {"k": 32}})
    stale = convergence_section(ReportInputs(tmp_path, tmp_path, other))
    assert not stale.tables and "differs in train_sae" in stale.meaning
