"""The width x k grid's contour table and figure, from hand-written metrics files."""

import json

from omegaconf import OmegaConf

from pipeline.contours import draw_contours, grid_names, read_grid
from pipeline.report import ReportInputs, contours_section
from pipeline.sae_config import SaeSetConfig

HOOK = "blocks.2.hook_resid_post"


def _write(metrics, name, l0, nonlinear_fvu):
    for folder, values in (("sae", {"l0": l0, "fvu": 0.2}),
                           ("probes", {"nonlinear_fvu": nonlinear_fvu, "error_vector_r2": 0.5, "error_norm_r2": 0.8})):
        (metrics / folder).mkdir(parents=True, exist_ok=True)
        (metrics / folder / f"{name}.json").write_text(json.dumps(values))


def test_grid_reads_every_width_and_k_and_draws(tmp_path):
    cfg = SaeSetConfig(hooks=[HOOK], widths=[128, 512], k=16, ks=[8, 32], k_hooks=[HOOK])
    names = grid_names(cfg, HOOK)
    assert names[(128, 16)] == f"{HOOK}-128" and names[(512, 32)] == f"{HOOK}-512-k32" and len(names) == 6
    for (width, k), name in names.items():
        _write(tmp_path, name, l0=float(k), nonlinear_fvu=0.1 + k / 1000 - width / 1e5)
    rows = read_grid(cfg, HOOK, tmp_path)
    assert [(r["width"], r["k"]) for r in rows] == [(128, 8), (128, 16), (128, 32), (512, 8), (512, 16), (512, 32)]
    assert rows[0]["nonlinear_fvu"] == 0.1 + 8 / 1000 - 128 / 1e5 and rows[0]["l0"] == 8.0
    assert draw_contours(rows, HOOK, tmp_path / "c.png").stat().st_size > 10_000

    (tmp_path / "contours.json").write_text(json.dumps({"grids": {HOOK: rows}}))
    params = OmegaConf.create({"sae": {"widths": [128, 512], "k": 16, "ks": [8, 32], "k_hooks": [HOOK]}})
    section = contours_section(ReportInputs(tmp_path, tmp_path, params))
    assert [row[0] for row in section.tables[0].rows] == [r["sae"] for r in rows]
    assert contours_section(ReportInputs(tmp_path / "none", tmp_path, params)) is None
