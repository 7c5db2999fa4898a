"""The HTML report: rendered in headless Chromium (every image loads, no number is NaN, the key
numbers are those of the metrics files), and its builder's handling of NaN and missing sections."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip():
    """A headless Chromium driven through chromedriver; CI (REQUIRE_BROWSER=1) fails instead of skipping."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "Debian's chromium and chromium-driver are not installed (make browser)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def rendered(smoke_repo):
    """(images: [(src, complete, naturalWidth)], visible text, section ids) of the smoke run's report."""
    index = smoke_repo / "reports" / "index.html"
    assert index.exists(), "the report stage did not write reports/index.html"
    driver = _browser_or_skip()
    try:
        driver.get(index.resolve().as_uri())
        driver.execute_async_script(  # wait until every image has loaded or failed
            "const done = arguments[arguments.length - 1];"
            "Promise.all(Array.from(document.images).map(i => i.complete ? null :"
            " new Promise(r => { i.onload = r; i.onerror = r; }))).then(() => done());")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        text = driver.execute_script("return document.body.innerText;")
        sections = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id);")
        tables = dict(driver.execute_script(
            "return Array.from(document.querySelectorAll('section')).map(s => [s.id,"
            " Array.from(s.querySelectorAll('table tbody tr')).map(tr => Array.from(tr.cells).map(c => c.innerText))]);"))
    finally:
        driver.quit()
    return images, text, sections, tables


@pytest.mark.slow
def test_every_image_in_the_report_loads(rendered, smoke_repo):
    images, _, _, _ = rendered
    figures = list((smoke_repo / "figures").rglob("*.png"))
    assert len(images) == len(figures) + 1  # every figure, plus the report's own SAE figure
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, f"images that did not load: {broken}"


@pytest.mark.slow
def test_no_number_in_the_report_is_nan(rendered):
    _, text, _, _ = rendered
    assert not re.search(r"\bnan\b|\binf\b", text, flags=re.IGNORECASE), re.findall(r".{40}\bnan\b.{10}", text, flags=re.I)


def numbers(cell: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", cell)]


def close(cell: str, *values: float, tol: float) -> bool:
    """The cell's numbers are `values` as the report rounds them (a span "a → b" whose ends
    round alike is shown as one number)."""
    got = numbers(cell)
    expected = list(values) if len(got) == len(values) else [values[0]]
    return len(got) == len(expected) and all(abs(g - v) <= tol for g, v in zip(got, expected))


def load(smoke_repo: Path, relative: str) -> dict:
    return json.loads((smoke_repo / "metrics" / relative).read_text())


@pytest.mark.slow
def test_report_shows_every_experiment_in_order(rendered, smoke_repo):
    _, text, sections, _ = rendered
    # "convergence": the copy carries the default run's metrics/convergence.json, which the report
    # shows only as measured for another configuration (no table).
    assert sections == ["claims", "setup", "saes", "convergence", "linear-error", "contours", "scaling", "synthetic",
                        "earlier-components", "component-ce", "pursuit", "error-saes", "pathological"]
    assert "was measured for another configuration" in text
    params = OmegaConf.load(smoke_repo / "params.yaml")
    assert f"{params.tokens.n_contexts} x {params.tokens.context_length} tokens" in text
    assert "2 - 4.5 (GPT-2 small)" in text  # a published value beside ours


@pytest.mark.slow
def test_the_claims_table_has_a_computed_verdict_per_claim(rendered, smoke_repo):
    from pipeline.claims import CLAIMS, claims_table
    from pipeline.report import ReportInputs

    _, _, _, tables = rendered
    rows = claims_table(ReportInputs(smoke_repo / "metrics", smoke_repo / "figures", OmegaConf.load(smoke_repo / "params.yaml")))
    assert [row[0] for row in tables["claims"]] == [claim.name for claim in CLAIMS]
    assert [row[4].split(":")[0] for row in tables["claims"]] == [row["verdict"] for row in rows]


@pytest.mark.slow
def test_each_table_cell_is_its_own_metric(rendered, smoke_repo):
    """Every number of the key tables, matched by row and column to the metrics file it comes from."""
    _, _, _, tables = rendered
    params = OmegaConf.load(smoke_repo / "params.yaml")
    widths = sorted(params.sae.widths)
    summary = load(smoke_repo, "sae_summary.json")["saes"]
    sae_rows = {row[0]: row for row in tables["saes"]}
    assert set(sae_rows) == set(params.sae.hooks)
    for hook, row in sae_rows.items():
        for column, width in enumerate(widths, start=1):
            assert close(row[column], summary[f"{hook}-{width}"]["fvu"], tol=5e-4), (hook, width, row)

    linear_rows = {row[0]: row for row in tables["linear-error"] if row[0] != "published"}
    assert set(linear_rows) == set(params.sae.hooks)
    for hook, row in linear_rows.items():
        small, large = load(smoke_repo, f"probes/{hook}-{widths[0]}.json"), load(smoke_repo, f"probes/{hook}-{widths[-1]}.json")
        assert close(row[1], widths[0], widths[-1], tol=0)
        for column, key in ((2, "error_vector_r2"), (3, "error_norm_r2"), (5, "sae_fvu"), (6, "nonlinear_fvu")):
            assert close(row[column], small[key], large[key], tol=5e-4), (hook, key, row)

    inter_rows = {row[0]: row for row in tables["pathological"] if not row[0].startswith("published")}
    gurnee = [row for row in tables["pathological"] if row[0].startswith("published: GPT-2 small, layer 6")]
    assert len(gurnee) == 1 and gurnee[0][1:3] == ["0.1542", "0.0611"], gurnee  # Gurnee's published numbers
    assert gurnee[0][3 + params.interventions.positions.index("all")] == "2.52", gurnee
    assert set(inter_rows) == {f"{h}-{w}" for h in params.interventions.hooks for w in params.interventions.widths}
    for name, row in inter_rows.items():
        m = load(smoke_repo, f"interventions/{name}.json")
        assert close(row[1], m["interventions"]["substitution"]["kl"], tol=5e-4)
        assert close(row[2], m["interventions"]["epsilon_random"]["kl"], tol=5e-4)
        for column, setting in enumerate(params.interventions.positions, start=3):  # one ratio column per setting
            b = m["by_positions"][setting]
            assert close(row[column], b["kl_ratio_substitution_vs_epsilon_random"], b["kl_ratio_ci_low"], b["kl_ratio_ci_high"], tol=5e-3)
        z = 3 + len(params.interventions.positions)
        assert close(row[z], m["z_score_median"], m["z_score_median_ci_low"], m["z_score_median_ci_high"], tol=5e-3)
        assert close(row[z + 1], m["kl_ratio_substitution_vs_cov_random"], tol=5e-3)
        assert close(row[z + 2], m["ce_score"], tol=5e-4)

    component_ce = load(smoke_repo, "component_ce.json")
    ce_rows = {row[0]: row for row in tables["component-ce"] if row[0] != "published"}
    assert set(ce_rows) == set(component_ce)
    for name, row in ce_rows.items():
        r = component_ce[name]
        assert close(row[1], r["ce_recovered_linear_error"], r["ce_recovered_nonlinear_error"], tol=0.5), row

    pursuit_rows = {row[0]: row for row in tables["pursuit"] if row[0] != "published"}
    for name, row in pursuit_rows.items():
        m = load(smoke_repo, f"pursuit/{name}.json")
        assert close(row[1], m["encoder_fvu"], m["pursuit_fvu"], tol=5e-4), row

    error_rows = [row for row in tables["error-saes"] if row[0] != "published"]
    for row in error_rows:
        component = {"ê": "linear_error", "n": "nonlinear_error", "e": "error"}[row[1]]
        assert close(row[2], load(smoke_repo, f"error_saes/{row[0]}.json")["by_component"][component]["fvu"], tol=5e-4), row


def _minimal_metrics(root: Path, fvu: float) -> tuple[Path, Path]:
    metrics, figures = root / "metrics", root / "figures"
    figures.mkdir(parents=True)
    (metrics / "train_sae").mkdir(parents=True)
    sae = {"hook": "blocks.1.hook_resid_post", "site": "resid_post", "layer": 1, "width": 64,
           "fvu": fvu, "explained_variance": 1 - fvu, "l0": 8.0, "dead_fraction": 0.0}
    (metrics / "sae_summary.json").write_text(json.dumps({"saes": {"blocks.1.hook_resid_post-64": sae}}))
    (metrics / "harvest.json").write_text(json.dumps({"rows": 100}))
    return metrics, figures


def test_a_nan_metric_shows_as_nan_and_absent_experiments_are_listed(tmp_path):
    metrics, figures = _minimal_metrics(tmp_path, float("nan"))
    params = OmegaConf.create({"model": {"name": "m"}, "tokens": {"n_contexts": 4, "context_length": 8}})
    index = write_report(metrics, figures, params, tmp_path / "reports")
    page = index.read_text()
    assert ">NaN<" in page  # what the Chromium test looks for
    assert "Not in this run (no metrics): convergence, linear error (probes), width x k contours, scaling" in page
    assert (tmp_path / "reports" / "img" / "sae_fvu.png").stat().st_size > 0


def test_a_failed_rebuild_leaves_the_previous_report_whole(tmp_path):
    metrics, figures = _minimal_metrics(tmp_path, 0.25)
    params = OmegaConf.create({"model": {"name": "m"}})
    index = write_report(metrics, figures, params, tmp_path / "reports")
    before = index.read_text()
    (metrics / "sae_summary.json").write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        write_report(metrics, figures, params, tmp_path / "reports")
    assert index.read_text() == before and "0.250" in before


def test_the_report_shows_this_run_only(smoke_repo):
    """The smoke run's copy also holds the committed default run's per-SAE metrics (layer 15
    and the like): the report names only the SAEs of this run's params."""
    committed = [p for p in (smoke_repo / "metrics" / "interventions").glob("*.json") if "blocks.15." in p.name]
    assert committed, "the copy no longer holds another run's metrics; this test needs them"
    page = (smoke_repo / "reports" / "index.html").read_text()
    assert "blocks.15." not in page and "blocks.2.hook_resid_post-512" in page
