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

from pipeline.report import fmt, write_report

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
    finally:
        driver.quit()
    return images, text, sections


@pytest.mark.slow
def test_every_image_in_the_report_loads(rendered, smoke_repo):
    images, _, _ = rendered
    figures = list((smoke_repo / "figures").rglob("*.png"))
    assert len(images) == len(figures) + 1  # every figure, plus the report's own SAE figure
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, f"images that did not load: {broken}"


@pytest.mark.slow
def test_no_number_in_the_report_is_nan(rendered):
    _, text, _ = rendered
    assert not re.search(r"\bnan\b|\binf\b", text, flags=re.IGNORECASE), re.findall(r".{40}\bnan\b.{10}", text, flags=re.I)


@pytest.mark.slow
def test_report_shows_every_experiment_with_the_metrics_numbers(rendered, smoke_repo):
    _, text, sections = rendered
    assert sections == ["setup", "saes", "linear-error", "scaling", "synthetic", "earlier-components",
                        "component-ce", "pursuit", "error-saes", "pathological"]
    summary = json.loads((smoke_repo / "metrics" / "sae_summary.json").read_text())["saes"]
    for name, m in summary.items():
        assert fmt(m["fvu"]) in text, f"{name}: FVU {m['fvu']} missing from the report"
    for name in os.listdir(smoke_repo / "metrics" / "interventions"):
        m = json.loads((smoke_repo / "metrics" / "interventions" / name).read_text())
        assert fmt(m["kl_ratio_substitution_vs_epsilon_random"], 2) in text
    params = OmegaConf.load(smoke_repo / "params.yaml")
    assert f"{params.tokens.n_contexts} x {params.tokens.context_length} tokens" in text
    assert "2 - 4.5 (GPT-2 small)" in text  # a published value beside ours


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
    assert "Not in this run (no metrics): linear error (probes), scaling" in page
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
