"""The static HTML report: one section per experiment, built only from the metrics JSON files,
the figures and params.yaml that the other stages wrote (no number in it is typed by hand).

Each section has its figures, a table of key numbers beside the published value where the
papers give one (`pipeline.published`), one sentence on what the number means, and the configuration that produced it.
A section whose metrics are absent (its stage has no SAEs configured) is left out and listed.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from pipeline.claims import HEADER as CLAIMS_HEADER
from pipeline.claims import NO_INTERVAL_BAND, MissingMetric, claims_table, focus_sae, row_cells
from pipeline.published import GURNEE_GPT2_LAYER6, published_text
from pipeline.sae_config import sae_name

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    anchor: str
    title: str
    meaning: str  # one sentence: what the headline number means
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    config_keys: list[str] = field(default_factory=list)  # dotted params.yaml keys that produced it


class ReportInputs:
    """Read access to the metrics and figures directories and the composed params."""

    def __init__(self, metrics: Path, figures: Path, params: Any):
        self.metrics, self.figures, self.params = Path(metrics), Path(figures), params

    def json(self, relative: str) -> dict | None:
        path = self.metrics / relative
        return json.loads(path.read_text()) if path.exists() else None

    def sae_names(self, section: str) -> list[str]:
        """The SAEs that `section` names in this run's params (`hooks` x `widths`, and for `sae` also
        `extra_hooks` x `extra_widths`; the width x k grid has its own section). Per-SAE files
        are read for these only, never by a glob: a folder may also hold another run's files
        (e.g. the committed default run's, beside a smoke experiment's)."""
        grids = [("hooks", "widths")] + ([("extra_hooks", "extra_widths")] if section == "sae" else [])
        return [sae_name(h, w) for hooks, widths in grids
                for h in self.param(f"{section}.{hooks}") or [] for w in self.param(f"{section}.{widths}") or []]

    def json_dir(self, relative: str, section: str) -> dict[str, dict]:
        """The per-SAE metrics files under `relative` of the SAEs `section` names."""
        paths = {name: self.metrics / relative / f"{name}.json" for name in self.sae_names(section)}
        return by_sae_order({name: json.loads(p.read_text()) for name, p in paths.items() if p.exists()})

    def figure_files(self, *relative: str) -> list[Path]:
        """The named figures (paths under the figures folder) that exist, in the order given."""
        return [path for name in relative if (path := self.figures / name).exists()]

    def per_hook_figures(self, relative: str, section: str, suffixes: tuple[str, ...]) -> list[Path]:
        """`<relative>/<hook><suffix>.png` for each hook that `section` names, in layer order."""
        hooks = sorted(self.param(f"{section}.hooks") or [], key=_hook_order)
        return self.figure_files(*(f"{relative}/{hook}{suffix}.png" for hook in hooks for suffix in suffixes))

    def per_sae_figures(self, relative: str, section: str) -> list[Path]:
        """The per-SAE figures under `relative` of the SAEs `section` names."""
        names = sorted(self.sae_names(section), key=_hook_order)
        return [p for name in names if (p := self.figures / relative / f"{name}.png").exists()]

    def param(self, dotted: str) -> Any:
        value = OmegaConf.select(self.params, dotted, default=None)
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def fmt(value: Any, digits: int = 3) -> str:
    """A number for the report; NaN and infinities are written as such (the tests look for them)."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 10 ** (digits + 1) else f"{value:.{digits}f}"
    return str(value)


def span(first: Any, last: Any, digits: int = 3) -> str:
    return fmt(first, digits) if fmt(first, digits) == fmt(last, digits) else f"{fmt(first, digits)} → {fmt(last, digits)}"


def _hook_order(hook: str) -> tuple:
    """Layer first, then site, so tables read from the bottom of the model up."""
    parts = hook.split(".")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, hook)


def by_sae_order(per_sae: dict[str, Any]) -> dict[str, Any]:
    """{'<hook>-<width>': ...} in layer order, then width."""
    def key(name: str) -> tuple:
        hook, _, width = name.rpartition("-")
        return (*_hook_order(hook), int(width) if width.isdigit() else 0)
    return {name: per_sae[name] for name in sorted(per_sae, key=key)}


def _by_hook(per_sae: dict[str, dict]) -> dict[str, list[tuple[int, dict]]]:
    """{'<hook>-<width>': m} -> {hook: [(width, m), ...] sorted by width}, hooks in layer order."""
    grouped: dict[str, list[tuple[int, dict]]] = {}
    for name, metrics in by_sae_order(per_sae).items():
        hook, width = name.rsplit("-", 1)
        grouped.setdefault(hook, []).append((int(width), metrics))
    return grouped


def claims_section(inputs: ReportInputs) -> Section:
    """Every claim of the two studies with this run's verdict (pipeline/claims.py computes them)."""
    try:
        focus_text = sae_name(*focus_sae(inputs))
    except MissingMetric as absent:
        focus_text = f"none ({absent})"
    return Section(
        "claims", "Claims: replicated, departs or inconclusive",
        f"Each claim beside this run's number, judged by the rule beside it: replicated if this run's interval lies "
        f"inside the published range, departs if it lies wholly outside, inconclusive if it straddles a boundary or a "
        f"metric is missing. Intervals are 95% CIs where the metrics carry them, else the spread over the SAEs named; "
        f"with neither, a ±{NO_INTERVAL_BAND:.0%} band is assumed. Focus SAE: {focus_text}.",
        tables=[Table(CLAIMS_HEADER, [row_cells(row) for row in claims_table(inputs)])],
        config_keys=["earlier_components.hooks", "earlier_components.widths", "interventions.hooks", "interventions.positions"],
    )


def setup_section(inputs: ReportInputs) -> Section:
    harvest = inputs.json("harvest.json") or {}
    p = inputs.param
    rows = [
        ["model", fmt(p("model.name")), f"source {p('model.source')}: {p('model.path') or p('model.package')}"],
        ["text", fmt(p("data.name") or p("data.source")), "the corpus the contexts come from"],
        ["contexts", f"{p('tokens.n_contexts')} x {p('tokens.context_length')} tokens",
         f"first {p('tokens.skip_positions')} positions not scored; test share {p('tokens.test_fraction')}, "
         f"SAE-only share of the rest {p('tokens.sae_fraction')}"],
        ["scored tokens", fmt(harvest.get("rows")), "rows of every activation store"],
        ["harvested sites", ", ".join(p("harvest.hooks") or []), f"compute {p('lm.compute_dtype')}, store {p('harvest.store_dtype')}"],
        ["seeds", f"tokens {p('tokens.seed')}, SAE training {p('train_sae.seed')}, interventions {p('interventions.seed')}", ""],
    ]
    return Section(
        "setup", "Setup", "Every number below is measured on held-out test contexts of this run.",
        tables=[Table(["", "value", "detail"], rows)],
    )


def sae_section(inputs: ReportInputs, out_images: Path) -> Section | None:
    summary = inputs.json("sae_summary.json")
    if not summary:
        return None
    k = inputs.param("sae.k")
    grouped = _by_hook({name: m for name, m in summary["saes"].items() if m.get("k", k) == k})  # the k grid: its own section
    widths = sorted({w for rows in grouped.values() for w, _ in rows})
    rows = []
    for hook, entries in grouped.items():
        by_width = dict(entries)
        rows.append([hook, *(fmt(by_width[w]["fvu"]) if w in by_width else "" for w in widths),
                     fmt(max(m["l0"] for _, m in entries), 1), f"{100 * max(m['dead_fraction'] for _, m in entries):.1f}%"])
    figure = _sae_figure(grouped, inputs.metrics / "train_sae", out_images / "sae_fvu.png")
    return Section(
        "saes", "SAEs: reconstruction error",
        "FVU = Σ‖x - x̂‖² / Σ‖x - mean x‖² on test tokens: the share of the activation's variance the SAE fails to "
        "reconstruct, i.e. the size of its dark matter.",
        tables=[Table(["hook", *(f"FVU, width {w}" for w in widths), "L0 (max)", "dead latents (max)"], rows)],
        figures=[figure],
        config_keys=["sae.source", "sae.architecture", "sae.k", "sae.hooks", "sae.widths", "train_sae.tokens", "train_sae.lr"],
    )


def _sae_figure(grouped: dict[str, list[tuple[int, dict]]], curves: Path, path: Path) -> Path:
    import csv

    from pipeline.plots import new_figure, save

    fig, (left, right) = new_figure(11, 4, ncols=2)
    for hook, entries in grouped.items():
        left.plot([w for w, _ in entries], [m["fvu"] for _, m in entries], "o-", label=hook)
        widest = entries[-1][0]
        curve = curves / f"{hook}-{widest}.csv"
        if curve.exists():
            with open(curve) as f:
                points = list(csv.DictReader(f))
            right.plot([float(r["tokens"]) for r in points], [float(r["explained_variance"]) for r in points], label=f"{hook}-{widest}")
    left.set_xscale("log", base=2)
    left.set(xlabel="SAE width (latents)", ylabel="test FVU", title="FVU against width")
    right.set(xlabel="training tokens", ylabel="explained variance (training batch)", title="Training curves (widest SAE per hook)")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:  # a run without training curves (pretrained SAEs) has none
            ax.legend(fontsize=7)
    return save(fig, path)


def convergence_section(inputs: ReportInputs) -> Section | None:
    result = inputs.json("convergence.json")
    if not result:
        return None
    changed = [key for key, value in (result.get("settings") or {"(unrecorded)": None}).items() if inputs.param(key) != value]
    if changed:  # written by the check of another configuration: not this run's
        return Section(
            "convergence", "SAEs: trained enough?",
            f"metrics/convergence.json was measured for another configuration (it differs in {', '.join(changed)}); "
            "rerun `python benchmarks/convergence.py`, then `dvc repro -f -s report`.")
    rows = [[r["sae"], f"{r['distinct_tokens']:,}", f"{r['samples']:,} ({r['epochs']:.1f} epochs)", fmt(r["train_fvu"], 4),
             fmt(r["test_fvu"], 4), f"{100 * r['train_test_gap']:+.1f}%", fmt(r["doubled_test_fvu"], 4),
             f"{100 * r['test_fvu_vs_doubled']:+.1f}%", "yes" if r["converged"] else "no"] for r in result["saes"]]
    tolerance = f"{100 * result['tolerance']:.0f}%"
    return Section(
        "convergence", "SAEs: trained enough?",
        f"Each SAE at {result['hook']} against itself: its FVU on its own training tokens (a gap above {tolerance} is "
        f"overfitting), and against the same SAE trained on twice the distinct tokens for twice the steps (a test FVU more "
        f"than {tolerance} higher means it has not converged). Measured by benchmarks/convergence.py after the run.",
        tables=[Table(["SAE", "distinct training tokens", "samples", "train FVU", "test FVU", "gap", "2x variant: test FVU",
                       "difference", f"both within {tolerance}"], rows)],
        config_keys=["train_sae.tokens", "train_sae.lr", "train_sae.autocast", "tokens.n_contexts", "tokens.sae_fraction"],
    )


def contours_section(inputs: ReportInputs) -> Section | None:
    result = inputs.json("contours.json")
    if not result or not result.get("grids"):
        return None
    rows = [[row["sae"], str(row["width"]), str(row["k"]), fmt(row["l0"], 1), fmt(row["nonlinear_fvu"], 4),
             fmt(row["error_vector_r2"]), fmt(row["error_norm_r2"])] for grid in result["grids"].values() for row in grid]
    return Section(
        "contours", "Dark matter over width and L0",
        "Engels et al.'s contour figures: the nonlinear FVU and both R² over a grid of SAE widths and k (L0); a nonlinear "
        "FVU whose contours run parallel to the width axis does not shrink as SAEs grow.",
        tables=[Table(["SAE", "width", "k", "test L0", "nonlinear FVU", "error-vector R²", "‖e‖ R²"], rows)],
        figures=inputs.figure_files(*(f"contours/{hook}.png" for hook in result["grids"])),
        config_keys=["sae.widths", "sae.k", "sae.ks", "sae.k_hooks"],
    )


def linear_error_section(inputs: ReportInputs) -> Section | None:
    probes = inputs.json_dir("probes", "sae")
    if not probes:
        return None
    rows = []
    for hook, entries in _by_hook(probes).items():
        (w0, a), (w1, b) = entries[0], entries[-1]
        best = max(b["error_norm_baseline_r2"], key=b["error_norm_baseline_r2"].get)
        rows.append([hook, span(w0, w1), span(a["error_vector_r2"], b["error_vector_r2"]),
                     span(a["error_norm_r2"], b["error_norm_r2"]),
                     f"{best}: {fmt(b['error_norm_baseline_r2'][best])}",
                     span(a["sae_fvu"], b["sae_fvu"]), span(a["nonlinear_fvu"], b["nonlinear_fvu"])])
    rows.append(["published", "", published_text("error_vector_r2"), published_text("error_norm_r2"), "", "", published_text("nonlinear_fvu")])
    return Section(
        "linear-error", "Dark matter: how much of the error is linear in x",
        "Error-vector R² is the share of the SAE error's variance that a linear map from the activation x predicts "
        "on test tokens; the nonlinear FVU is the error left after adding that prediction back, FVU(x, x̂ + ê).",
        tables=[Table(["hook", "width", "error-vector R²", "‖e‖ R²", "best baseline for ‖e‖ (widest)", "SAE FVU", "nonlinear FVU"], rows)],
        figures=inputs.figure_files("probes/by_width.png", "probes/component_norms.png", "probes/norm_baselines.png"),
        config_keys=["probes.bias", "probes.ridge", "tokens.sae_fraction"],
    )


def scaling_section(inputs: ReportInputs) -> Section | None:
    scaling = inputs.json("scaling.json")
    if not scaling:
        return None
    rows = []
    for hook, m in sorted(scaling.items(), key=lambda kv: _hook_order(kv[0])):
        law = m.get("power_law") or {}
        per_token = m.get("per_token_r2") or {}
        gains = m.get("per_token_nonlinear_gain") or {}
        rows.append([hook, *(fmt(law.get(k)) if law else "not fitted (too few widths)" for k in ("c", "a", "m")),
                     (f"{min(per_token.values()):.3f} - {max(per_token.values()):.3f}" if per_token else "n/a"),
                     (fmt(max(gains.values())) if gains else "n/a")])
    return Section(
        "scaling", "Dark matter: scaling with width",
        "c is the FVU that the power law FVU(W) = c + a·W^-m predicts no width removes; per-token R² says how well a "
        "token's error norm at a small width predicts it at a larger one, and the gain how much its nonlinear error adds.",
        tables=[Table(["hook", "c", "a", "m", "per-token R² (all width pairs)", "largest gain from ‖n_i‖"], rows)],
        figures=inputs.per_hook_figures("scaling", "sae", ("-bands", "-latent_vs_probe", "-per_token")),
        config_keys=["sae.hooks", "sae.widths", "sae.k", "pursuit.hooks", "pursuit.widths"],
    )


def synthetic_section(inputs: ReportInputs) -> Section | None:
    m = inputs.json("synthetic.json")
    if not m:
        return None
    share = m["linear_share_of_added_error"]
    rows = [[source, fmt(share[source]), fmt(m[f"linear_vs_{source}"]), fmt(m[f"nonlinear_vs_{source}"])]
            for source in ("activation_noise", "introduced_noise", "masked_fraction")]
    rows.append(["published", published_text("synthetic"), "", ""])
    return Section(
        "synthetic", "Dark matter: synthetic activations",
        "The linear share of the added error is how much of the error that one planted source adds a linear probe can "
        "predict: near 1 for sources of linear error, near 0 for sources of nonlinear error.",
        tables=[Table(["planted source", "linear share of the error it adds", "corr. with linear FVU", "corr. with nonlinear FVU"], rows)],
        figures=inputs.figure_files("synthetic.png"),
        config_keys=["synthetic.hooks", "synthetic.widths", "synthetic.activation_noise", "synthetic.introduced_noise", "synthetic.masked_fraction"],
    )


def earlier_components_section(inputs: ReportInputs) -> Section | None:
    m = inputs.json("earlier_components.json")
    if not m:
        return None
    rows = [[name, fmt(r["error"]), fmt(r["linear_error"]), fmt(r["nonlinear_error"])] for name, r in m.items()]
    rows.append(["published", "", "", published_text("earlier_components")])
    return Section(
        "earlier-components", "Dark matter: predicting the error from earlier components",
        "Test R² of a linear map from each predictor to the target SAE's total error e, its linear part ê and its "
        "nonlinear part n: what of the dark matter another part of the model already carries.",
        tables=[Table(["predictor", "R² of e", "R² of ê", "R² of n"], rows)],
        figures=inputs.figure_files("earlier_components.png"),
        config_keys=["earlier_components.hooks", "earlier_components.widths", "earlier_components.sources"],
    )


def pathological_section(inputs: ReportInputs) -> Section | None:
    per_sae = inputs.json_dir("interventions", "interventions")
    if not per_sae:
        return None
    settings = list(inputs.param("interventions.positions") or [])
    rows = []
    for name, m in per_sae.items():
        kl, by_positions = m["interventions"], m.get("by_positions") or {}
        ratios = [_ratio_with_interval(by_positions.get(s, {})) for s in settings]
        rows.append([name, fmt(kl["substitution"]["kl"]), fmt(kl["epsilon_random"]["kl"]), *ratios,
                     _z_with_interval(m), fmt(m["kl_ratio_substitution_vs_cov_random"], 2), fmt(m["ce_score"]),
                     published_text("kl_ratio_attn_z") if "attn" in name else published_text("kl_ratio_resid")])
    gurnee = GURNEE_GPT2_LAYER6
    rows.append(["published: GPT-2 small, layer 6 resid, jb SAE (Gurnee)", fmt(gurnee["kl_sae"], 4), fmt(gurnee["kl_epsilon_random"], 4),
                 *(fmt(gurnee["kl_ratio"], 2) if s == "all" else "" for s in settings), "", "", "",
                 published_text("gurnee_gpt2_layer6")])
    return Section(
        "pathological", "Pathological errors: splicing the SAE into the model",
        "The KL ratio is how much more splicing in the SAE's reconstruction changes the next-token distribution than "
        "moving the activation the same distance in a random direction (its denominator averages every random draw; "
        "the interval resamples tokens and draws); above 1, the SAE's error is worse than random. Positions 'scored' "
        "splice the scored tokens only; 'all' is Gurnee's setting, every position, BOS included (docs/science.md).",
        tables=[Table(["SAE", "KL substitution", "KL epsilon_random", *(f"ratio, positions '{s}' (95% CI)" for s in settings),
                       "median z (95% CI)", "ratio vs cov_random", "CE score", "published ratio"], rows)],
        figures=[*inputs.figure_files("layer_sweep.png"), *inputs.per_sae_figures("interventions", "interventions")],
        config_keys=["interventions.hooks", "interventions.widths", "interventions.n_contexts", "interventions.n_draws",
                     "interventions.positions", "interventions.seed"],
    )


def _ratio_with_interval(metrics: dict) -> str:
    if "kl_ratio_substitution_vs_epsilon_random" not in metrics:
        return "n/a"
    return (f"{fmt(metrics['kl_ratio_substitution_vs_epsilon_random'], 2)} "
            f"[{fmt(metrics['kl_ratio_ci_low'], 2)}, {fmt(metrics['kl_ratio_ci_high'], 2)}]")


def _z_with_interval(metrics: dict) -> str:
    if metrics.get("z_score_median") is None:
        return "n/a"
    return f"{fmt(metrics['z_score_median'], 2)} [{fmt(metrics.get('z_score_median_ci_low'), 2)}, {fmt(metrics.get('z_score_median_ci_high'), 2)}]"


def component_ce_section(inputs: ReportInputs) -> Section | None:
    m = inputs.json("component_ce.json")
    if not m:
        return None
    rows = [[name, f"{r['ce_recovered_linear_error']:.0f} / {r['ce_recovered_nonlinear_error']:.0f}",
             f"{r['variance_recovered_linear_error']:.0f} / {r['variance_recovered_nonlinear_error']:.0f}",
             f"{r['error_norm_share_linear_error']:.0f} / {r['error_norm_share_nonlinear_error']:.0f}"] for name, r in sorted(m.items(), key=lambda kv: _hook_order(kv[0]))]
    rows.append(["published", published_text("component_ce"), "", ""])
    return Section(
        "component-ce", "Dark matter: downstream loss of the error components",
        "% CE recovered is how much of the next-token loss that splicing x̂ costs comes back when the linear (ê) or "
        "nonlinear (n) error is added back; 'proportional' means it matches the component's share of the variance.",
        tables=[Table(["SAE", "% CE recovered ê / n", "% variance recovered ê / n", "% of the error norm ê / n"], rows)],
        figures=inputs.figure_files("component_ce.png"),
        config_keys=["component_ce.hooks", "component_ce.widths", "component_ce.n_contexts"],
    )


def pursuit_section(inputs: ReportInputs) -> Section | None:
    per_sae = inputs.json_dir("pursuit", "pursuit")
    if not per_sae:
        return None
    rows = [[name, span(m["encoder_fvu"], m["pursuit_fvu"]), span(m["encoder_nonlinear_fvu"], m["pursuit_nonlinear_fvu"]),
             span(m["encoder_l0"], m["pursuit_l0"], 1), f"{100 * m['share_of_tokens_pursuit_better']:.0f}%"] for name, m in per_sae.items()]
    rows.append(["published", published_text("pursuit"), "", "", ""])
    return Section(
        "pursuit", "Reducing the error: gradient pursuit",
        "Encoder → pursuit FVU is how much of the error a better choice of latents and coefficients, from the same "
        "dictionary at the same L0, removes: the part of the dark matter that is the encoder's fault.",
        tables=[Table(["SAE", "FVU encoder → pursuit", "nonlinear FVU encoder → pursuit", "L0", "tokens where pursuit is better"], rows)],
        config_keys=["pursuit.hooks", "pursuit.widths", "pursuit.fit_rows"],
    )


def error_saes_section(inputs: ReportInputs) -> Section | None:
    per_sae = inputs.json_dir("error_saes", "error_saes")
    if not per_sae:
        return None
    rows = []
    for name, m in per_sae.items():
        for component, target in (("linear_error", "ê"), ("nonlinear_error", "n"), ("error", "e")):
            r = m["by_component"][component]
            rows.append([name, target, fmt(r["fvu"]), fmt(r["l0"], 1), f"{100 * r['dead_fraction']:.1f}%",
                         fmt(r.get("judge_score")) if "judge_score" in r else "off"])
    rows.append(["published", published_text("error_saes"), "", "", "", ""])
    return Section(
        "error-saes", "Reducing the error: SAEs trained on the error components",
        "The FVU of an SAE trained on one error component says how learnable (how sparse) that component is: "
        "a higher FVU at the same L0 means harder to learn.",
        tables=[Table(["SAE", "trained on", "FVU of its target", "L0", "dead latents", "judge score"], rows)],
        figures=inputs.per_sae_figures("error_saes", "error_saes"),
        config_keys=["error_saes.hooks", "error_saes.widths", "error_saes.judge", "sae.architecture", "sae.k"],
    )


SECTIONS: list[tuple[str, Callable[..., Section | None]]] = [
    ("convergence", convergence_section),
    ("linear error (probes)", linear_error_section),
    ("width x k contours", contours_section),
    ("scaling", scaling_section),
    ("synthetic", synthetic_section),
    ("earlier components", earlier_components_section),
    ("component CE", component_ce_section),
    ("pursuit", pursuit_section),
    ("error SAEs", error_saes_section),
    ("interventions", pathological_section),
]


def build_sections(inputs: ReportInputs, out_images: Path) -> tuple[list[Section], list[str]]:
    """All sections whose metrics exist, and the names of those left out."""
    sections = [claims_section(inputs), setup_section(inputs)]
    missing = []
    saes = sae_section(inputs, out_images)
    if saes:
        sections.append(saes)
    else:
        missing.append("SAEs")
    for name, builder in SECTIONS:
        section = builder(inputs)
        if section is None:
            missing.append(name)
        else:
            sections.append(section)
    return sections, missing


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _config_html(inputs: ReportInputs, keys: list[str]) -> str:
    if not keys:
        return ""
    items = "".join(f"<code>{html.escape(k)}</code> = <code>{html.escape(json.dumps(inputs.param(k)))}</code><br>" for k in keys)
    return f"<details open><summary>configuration</summary><p class='config'>{items}</p></details>"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
.meaning { background: #f6f8fa; border-left: 4px solid #4a7; padding: 0.4em 0.8em; }
.figures { display: flex; flex-wrap: wrap; gap: 0.8em; } .figures figure { flex: 1 1 520px; margin: 0; max-width: 900px; }
.figures img { width: 100%; border: 1px solid #ddd; }
.config { font-size: 0.85em; color: #444; } nav a { margin-right: 1em; }
"""


def render_html(sections: list[Section], missing: list[str], inputs: ReportInputs, image_names: dict[Path, str]) -> str:
    nav = "".join(f"<a href='#{s.anchor}'>{html.escape(s.title)}</a>" for s in sections)
    parts = []
    for s in sections:
        figures = "".join(
            f"<figure><img src='{html.escape(image_names[f])}' alt='{html.escape(f.name)}'><figcaption>{html.escape(f.name)}</figcaption></figure>"
            for f in s.figures)
        parts.append(
            f"<section id='{s.anchor}'><h2>{html.escape(s.title)}</h2><p class='meaning'>{html.escape(s.meaning)}</p>"
            + "".join(_table_html(t) for t in s.tables)
            + (f"<div class='figures'>{figures}</div>" if figures else "")
            + _config_html(inputs, s.config_keys) + "</section>")
    left_out = (f"<p>Not in this run (no metrics): {html.escape(', '.join(missing))}.</p>" if missing else "")
    title = f"SAE dark matter: {inputs.param('model.name')}"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{left_out}"
            + "".join(parts) + "</body></html>\n")


def write_report(metrics: Path, figures: Path, params: Any, out: Path) -> Path:
    """Write `out/index.html` with its images in `out/img/`. Built in a sibling directory and
    renamed into place, so a crash leaves the previous report whole."""
    out = Path(out)
    building = out.with_name(out.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    (building / "img").mkdir(parents=True)
    inputs = ReportInputs(metrics, figures, params)
    sections, missing = build_sections(inputs, building / "img")
    image_names: dict[Path, str] = {}
    for s in sections:
        for figure in s.figures:
            if figure.parent == building / "img":
                image_names[figure] = f"img/{figure.name}"
                continue
            name = "img/" + str(figure.relative_to(inputs.figures)).replace("/", "--")
            shutil.copyfile(figure, building / name)
            image_names[figure] = name
    (building / "index.html").write_text(render_html(sections, missing, inputs, image_names))
    if out.exists():
        shutil.rmtree(out)
    building.rename(out)
    return out / "index.html"
