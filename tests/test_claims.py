"""The claim-by-claim verdict (pipeline/claims.py): each rule on hand-made metrics whose answer is
known, the report's first section, and the CLI on the committed run's metrics."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.claims import CLAIMS, DEPARTS, INCONCLUSIVE, REPLICATED, Estimate, claims_table, compare, verdict
from pipeline.report import ReportInputs, write_report
from tests.conftest import REPO

FOCUS = "blocks.1.hook_resid_post"
RESID_2 = "blocks.2.hook_resid_post"
ATTN = "blocks.1.attn.hook_z"
PARAMS = {
    "model": {"name": "m"},
    "sae": {"hooks": [FOCUS, ATTN], "widths": [64, 128]},
    "earlier_components": {"hooks": [FOCUS], "widths": [128]},
    "component_ce": {"hooks": [FOCUS], "widths": [128]},
    "pursuit": {"hooks": [FOCUS], "widths": [64, 128]},
    "error_saes": {"hooks": [FOCUS], "widths": [128]},
    "interventions": {"hooks": [FOCUS, RESID_2, ATTN], "widths": [128]},
}


def write(metrics: Path, relative: str, value: dict) -> None:
    path = metrics / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def probes(error_vector_r2: float, error_norm_r2: float, nonlinear_fvu: float) -> dict:
    return {"error_vector_r2": error_vector_r2, "error_norm_r2": error_norm_r2, "nonlinear_fvu": nonlinear_fvu,
            "sae_fvu": 2 * nonlinear_fvu, "error_norm_baseline_r2": {"x_norm": 0.3}}


def interventions(ratio: float, low: float, high: float, cov_ratio: float, **extra) -> dict:
    kl = {"substitution": {"kl": 0.3}, "epsilon_random": {"kl": 0.3 / ratio}}
    return {"kl_ratio_substitution_vs_epsilon_random": ratio, "kl_ratio_ci_low": low, "kl_ratio_ci_high": high,
            "kl_ratio_substitution_vs_cov_random": cov_ratio, "ce_score": 0.95, "interventions": kl, **extra}


def error_saes(fvu_n: float, fvu_e_hat: float) -> dict:
    fvus = {"linear_error": fvu_e_hat, "nonlinear_error": fvu_n, "error": 0.5}
    return {"by_component": {name: {"fvu": fvu, "l0": 8.0, "dead_fraction": 0.0} for name, fvu in fvus.items()}}


def pursuit(encoder_fvu: float, pursuit_fvu: float, encoder_nonlinear: float = 0.1,
            pursuit_nonlinear: float = 0.099) -> dict:
    return {"encoder_fvu": encoder_fvu, "pursuit_fvu": pursuit_fvu, "encoder_nonlinear_fvu": encoder_nonlinear,
            "pursuit_nonlinear_fvu": pursuit_nonlinear, "encoder_l0": 8.0, "pursuit_l0": 8.0, "share_of_tokens_pursuit_better": 0.5}


def component_ce(ce_n: float, variance_n: float) -> dict:
    return {"ce_recovered_linear_error": 50.0, "ce_recovered_nonlinear_error": ce_n, "variance_recovered_linear_error": 50.0,
            "variance_recovered_nonlinear_error": variance_n, "error_norm_share_linear_error": 50.0,
            "error_norm_share_nonlinear_error": 50.0}


@pytest.fixture
def metrics(tmp_path) -> Path:
    """A run where every claim lies inside its published range."""
    root = tmp_path / "metrics"
    write(root, f"probes/{FOCUS}-64.json", probes(0.50, 0.95, 0.100))
    write(root, f"probes/{FOCUS}-128.json", probes(0.45, 0.93, 0.102))
    write(root, "scaling.json", {FOCUS: {"per_token_r2": {"64_to_128": 0.9}}})
    write(root, "component_ce.json", {f"{FOCUS}-128": component_ce(50.0, 50.0)})
    write(root, f"error_saes/{FOCUS}-128.json", error_saes(0.6, 0.4))
    write(root, f"pursuit/{FOCUS}-64.json", pursuit(0.2, 0.195))
    write(root, f"pursuit/{FOCUS}-128.json", pursuit(0.2, 0.196))
    write(root, "earlier_components.json", {"earlier_sae_outputs": {"error": 0.1, "linear_error": 0.3, "nonlinear_error": 0.2}})
    write(root, f"interventions/{FOCUS}-128.json", interventions(3.0, 2.5, 3.5, 2.0))
    write(root, f"interventions/{RESID_2}-128.json", interventions(3.2, 2.8, 3.6, 2.5))
    write(root, f"interventions/{ATTN}-128.json", interventions(1.2, 1.0, 1.4, 1.1))
    return root


def table(metrics: Path, params: dict = PARAMS) -> dict[str, dict]:
    rows = claims_table(ReportInputs(metrics, metrics.parent / "figures", OmegaConf.create(params)))
    return {row["claim"]: row for row in rows}


def claim(fragment: str) -> str:
    """The full name of the one claim whose name contains `fragment`."""
    (name,) = [c.name for c in CLAIMS if fragment in c.name]
    return name


def test_every_claim_has_a_numeric_published_range():
    for c in CLAIMS:
        low, high = c.published_range
        assert low is not None and high is not None and low < high, c.name


def test_the_rule_compares_an_interval_with_the_published_range():
    assert compare(0.45, 0.55, (0.4, 0.6)) == REPLICATED
    assert compare(0.7, 0.8, (0.9, 1.0)) == DEPARTS
    assert compare(1.1, 1.2, (0.9, 1.0)) == DEPARTS
    assert compare(0.85, 0.95, (0.9, 1.0)) == INCONCLUSIVE
    assert compare(0.3, 0.7, (0.4, 0.6)) == INCONCLUSIVE  # wider than the whole range


def test_without_an_interval_a_band_stands_in_and_a_value_near_a_boundary_is_inconclusive():
    assert verdict(Estimate(1.5), (1.0, float("inf"))).outcome == REPLICATED
    assert verdict(Estimate(0.8), (1.0, float("inf"))).outcome == DEPARTS
    near = verdict(Estimate(0.99), (1.0, float("inf")))
    assert near.outcome == INCONCLUSIVE and "no interval" in near.reason


def test_every_claim_replicates_when_the_metrics_lie_inside_the_published_ranges(metrics):
    rows = table(metrics)
    assert [r["claim"] for r in rows.values()] == [c.name for c in CLAIMS]
    assert {name: r["verdict"] for name, r in rows.items()} == {c.name: REPLICATED for c in CLAIMS}, \
        {name: r["reason"] for name, r in rows.items() if r["verdict"] != REPLICATED}


def test_a_spread_over_widths_is_the_interval_of_a_probe_claim(metrics):
    row = table(metrics)[claim("half of the error vector")]
    assert (row["value"], row["low"], row["high"]) == (0.45, 0.45, 0.50)
    assert "spread over widths 64 - 128" in row["interval"]


def test_claims_depart_when_the_whole_interval_lies_outside(metrics):
    write(metrics, f"probes/{FOCUS}-64.json", probes(0.50, 0.80, 0.100))
    write(metrics, f"probes/{FOCUS}-128.json", probes(0.45, 0.75, 0.150))  # n grows by half: not flat
    write(metrics, f"interventions/{FOCUS}-128.json", interventions(1.6, 1.4, 1.8, 2.0))
    write(metrics, f"interventions/{RESID_2}-128.json", interventions(1.5, 1.3, 1.7, 1.0))
    write(metrics, f"pursuit/{FOCUS}-128.json", pursuit(0.2, 0.14, 0.1, 0.08))  # 30% of the FVU; 20% of n
    write(metrics, f"pursuit/{FOCUS}-64.json", pursuit(0.2, 0.15))
    rows = table(metrics)
    for fragment in ("90% of the error norm", "flat in width", "2 - 4.5x", "slight gain"):
        assert rows[claim(fragment)]["verdict"] == DEPARTS, rows[claim(fragment)]["reason"]
    assert "2 SAEs judged one by one (2 departs)" in rows[claim("2 - 4.5x")]["reason"]
    # earlier outputs explain 20% of n, pursuit removes 20%: a ratio of 1, on the boundary
    assert rows[claim("earlier components")]["verdict"] == INCONCLUSIVE


def test_claims_are_inconclusive_when_the_interval_straddles_a_boundary(metrics):
    write(metrics, f"probes/{FOCUS}-64.json", probes(0.65, 0.95, 0.100))  # 0.45 - 0.65 straddles 0.6
    write(metrics, f"interventions/{RESID_2}-128.json", interventions(1.5, 1.3, 1.7, 1.0))  # one resid SAE below 2
    write(metrics, f"interventions/{ATTN}-128.json", interventions(1.65, 1.6, 1.75, 1.1))  # CI crosses 1.7
    write(metrics, f"error_saes/{FOCUS}-128.json", error_saes(0.41, 0.40))  # 2.5% worse, no interval: within the band
    rows = table(metrics)
    for fragment in ("half of the error vector", "2 - 4.5x", "attn_z", "SAE trained on n"):
        assert rows[claim(fragment)]["verdict"] == INCONCLUSIVE, rows[claim(fragment)]["reason"]
    assert "(1 replicated, 1 departs)" in rows[claim("2 - 4.5x")]["reason"]
    assert rows[claim("SAE trained on n")]["interval"].startswith("no interval")


def test_a_missing_metric_makes_its_claim_inconclusive_with_the_reason(metrics):
    (metrics / f"error_saes/{FOCUS}-128.json").unlink()
    (metrics / "scaling.json").unlink()
    rows = table(metrics)
    assert rows[claim("SAE trained on n")]["verdict"] == INCONCLUSIVE
    assert rows[claim("SAE trained on n")]["reason"] == f"missing: error_saes/{FOCUS}-128.json"
    assert rows[claim("per-token")]["reason"] == "missing: scaling.json"
    assert rows[claim("half of the error vector")]["verdict"] == REPLICATED  # the others are unaffected


def test_without_an_attn_z_hook_or_a_focus_sae_the_claims_say_what_is_missing(metrics):
    params = {**PARAMS, "interventions": {"hooks": [FOCUS], "widths": [128]}}
    assert "attn_z hook in interventions.hooks" in table(metrics, params)[claim("attn_z")]["reason"]
    params = {key: value for key, value in PARAMS.items() if key != "earlier_components"}
    rows = table(metrics, params)
    judged_without_a_focus = {claim("2 - 4.5x"), claim("attn_z"), claim("covariance")}  # every SAE of interventions.hooks
    for name, row in rows.items():
        if name in judged_without_a_focus:
            assert row["verdict"] == REPLICATED, row
        else:
            assert row["verdict"] == INCONCLUSIVE and "no focus SAE" in row["reason"], row


def test_another_runs_files_are_not_read(metrics):
    """Only the SAEs this run's params name count: a stray file of another hook changes nothing."""
    write(metrics, "interventions/blocks.9.hook_resid_post-128.json", interventions(9.0, 8.0, 10.0, 1.0))
    assert table(metrics)[claim("2 - 4.5x")]["verdict"] == REPLICATED


def test_the_kl_claims_show_gurnees_positions_and_judge_the_primary_setting(metrics):
    all_positions = {"kl_ratio_substitution_vs_epsilon_random": 1.5, "kl_ratio_ci_low": 1.4, "kl_ratio_ci_high": 1.6}
    by_positions = {"scored": {"kl_ratio_substitution_vs_epsilon_random": 3.0, "kl_ratio_ci_low": 2.5, "kl_ratio_ci_high": 3.5},
                    "all": all_positions}
    focus = interventions(3.0, 2.5, 3.5, 2.0, positions="scored", by_positions=by_positions)
    write(metrics, f"interventions/{FOCUS}-128.json", focus)
    row = table(metrics)[claim("2 - 4.5x")]
    assert row["verdict"] == REPLICATED  # on 'scored'; 'all' (1.5) would depart
    assert f"all positions (Gurnee's splice): {FOCUS}-128 1.5 [1.4, 1.6]" in row["detail"]
    assert "positions 'scored'" in row["interval"]


def test_the_claims_are_the_reports_first_section_with_the_computed_verdicts(metrics):
    write(metrics, f"error_saes/{FOCUS}-128.json", error_saes(0.3, 0.4))  # departs: n is easier
    params = OmegaConf.create(PARAMS)
    page = write_report(metrics, metrics.parent / "figures", params, metrics.parent / "reports").read_text()
    assert re.findall(r"<section id='([^']+)'", page)[:2] == ["claims", "setup"]
    claims_html = page.split("<section id='claims'>")[1].split("</section>")[0]
    rows = claims_table(ReportInputs(metrics, metrics.parent / "figures", params))
    assert [r["verdict"] for r in rows].count(DEPARTS) == 1
    for row in rows:
        assert html.escape(f"{row['verdict']}: {row['reason']}") in claims_html


def test_the_cli_prints_a_row_per_claim_for_the_committed_run():
    command = [sys.executable, "-m", "pipeline.claims", "--metrics", str(REPO / "metrics"), "--params", str(REPO / "params.yaml")]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("| claim | published | this run |") and lines[1].startswith("| --- |")
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == [c.name for c in CLAIMS]
    assert all(re.search(r"\| (replicated|departs|inconclusive): ", line) for line in lines[2:])


def test_compare_sets_two_committed_runs_side_by_side(metrics, tmp_path):
    from pipeline.claims import rows_of_run, side_by_side

    repo = metrics.parent
    (repo / "params.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(PARAMS)))
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q", "-b", "main")
    git("add", "metrics", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first run")
    write(metrics, f"interventions/{FOCUS}-128.json", interventions(1.5, 1.4, 1.6, 1.0))
    write(metrics, f"interventions/{RESID_2}-128.json", interventions(1.6, 1.5, 1.7, 1.2))
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second run")
    text = side_by_side({rev: rows_of_run(rev, repo) for rev in ("HEAD~1", "HEAD")})
    lines = text.splitlines()
    assert lines[0] == "| claim | published | HEAD~1 | HEAD |" and len(lines) == 2 + len(CLAIMS)
    resid = next(line for line in lines if line.startswith(f"| {claim('residual stream')} |"))
    assert f"| {REPLICATED}: 3 [2.5, 3.6] (" in resid and f"| {DEPARTS}: 1.5 [1.4, 1.7] (" in resid, resid
    assert rows_of_run(str(repo)) == rows_of_run("HEAD", repo)  # a folder: the run in it
    with pytest.raises(SystemExit, match="no-such-rev"):
        rows_of_run("no-such-rev", repo)
