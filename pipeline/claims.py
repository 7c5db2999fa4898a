"""The claim-by-claim verdict: each claim of the two studies, its published value, this run's value
with its interval, and a verdict computed from the metrics files by the rule written beside it.

One rule decides every claim (`verdict`): *replicated* if this run's interval lies wholly inside the
published range, *departs* if it lies wholly outside, *inconclusive* if it straddles a boundary or
a metric it needs is missing. Where a claim covers several SAEs with intervals (the KL ratio over
the residual hooks), each SAE is judged alone and the claim is replicated or departs only if all
agree. What each claim measures, and which interval it has, is its `measure` function:

- a confidence interval where the metrics carry one (the KL ratios);
- otherwise the spread of the same number over the SAEs of the stage (e.g. the widths at the
  focus hook): the claims are about SAEs in general, and a verdict that holds at every width is
  one that does not hinge on the choice of SAE;
- otherwise no interval, and then a band of ±NO_INTERVAL_BAND of the value stands in for one
  (said in the table), so that a value a hair's breadth from a boundary is inconclusive.

The focus SAE is `earlier_components.hooks[0]` at `earlier_components.widths[0]`.

    python -m pipeline.claims [--metrics metrics --params params.yaml]   # the table as Markdown
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from pipeline.published import PUBLISHED
from pipeline.sae_config import sae_name

if TYPE_CHECKING:
    from pipeline.report import ReportInputs

REPLICATED, DEPARTS, INCONCLUSIVE = "replicated", "departs", "inconclusive"
NO_INTERVAL_BAND = 0.05
"""Relative half-width of the band that stands in for a missing interval. An assumption, not a
measurement: the run trains each SAE once, so its seed-to-seed spread is unknown."""


class MissingMetric(Exception):
    """A metric (file, key or setting) a claim needs is absent; the claim is then inconclusive."""


@dataclass(frozen=True)
class Estimate:
    """This run's number for one claim and what is known of its uncertainty."""

    value: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None
    interval: str = "no interval"
    """What [low, high] is: a 95% CI, a spread over SAEs, or 'no interval'."""
    detail: str = ""
    """Further numbers: each SAE's value, the other splice-position setting."""
    parts: tuple["Estimate", ...] = ()
    """One estimate per SAE, judged one by one, when the claim covers several SAEs with intervals."""
    missing: str = ""
    """Why there is no value (the absent metric); empty when there is one."""

    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Verdict:
    outcome: str
    reason: str


@dataclass(frozen=True)
class Claim:
    name: str
    published_key: str
    reads: str
    """Which metric of which SAE(s) it reads."""
    statistic: str
    """What the compared number is; with the published range it is the rule written beside it."""
    measure: Callable[["ReportInputs"], Estimate]

    @property
    def published_range(self) -> tuple[float, float]:
        entry = PUBLISHED[self.published_key]
        return entry.low, entry.high

    def rule(self) -> str:
        low, high = self.published_range
        return (f"{self.statistic}; interval inside {range_text(low, high)}: replicated, wholly outside: departs, "
                "else (or a metric missing): inconclusive")


# ---- numbers as text ---------------------------------------------------------------------------

def num(value: Optional[float], digits: int = 3) -> str:
    """`digits` significant digits; infinities as ∞ (the report's tests look for the word 'inf')."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def range_text(low: float, high: float, digits: int = 3) -> str:
    return f"[{num(low, digits)}, {num(high, digits)}{')' if math.isinf(high) else ']'}"


def interval_text(estimate: Estimate) -> str:
    if estimate.missing:
        return ""
    if estimate.has_interval():
        return f"[{num(estimate.low)}, {num(estimate.high)}] ({estimate.interval})"
    return f"no interval (±{NO_INTERVAL_BAND:.0%} band assumed)"


# ---- the rule ----------------------------------------------------------------------------------

def bounds(estimate: Estimate) -> tuple[float, float]:
    """The interval the rule compares: the estimate's own, or the stand-in band around its value."""
    if estimate.has_interval():
        return estimate.low, estimate.high
    band = NO_INTERVAL_BAND * abs(estimate.value)
    return estimate.value - band, estimate.value + band


def compare(low: float, high: float, published: tuple[float, float]) -> str:
    """replicated / departs / inconclusive for the interval [low, high] against the published range."""
    lo, hi = published
    if lo <= low and high <= hi:
        return REPLICATED
    if high < lo or low > hi:
        return DEPARTS
    return INCONCLUSIVE


def verdict(estimate: Estimate, published: tuple[float, float]) -> Verdict:
    if estimate.missing:
        return Verdict(INCONCLUSIVE, f"missing: {estimate.missing}")
    if estimate.parts:
        return combined_verdict(estimate.parts, published)
    if estimate.value is None or not math.isfinite(estimate.value):
        return Verdict(INCONCLUSIVE, f"the value is {num(estimate.value)}")
    low, high = bounds(estimate)
    if not (math.isfinite(low) and math.isfinite(high)):
        return Verdict(INCONCLUSIVE, f"the interval [{num(low)}, {num(high)}] is not finite")
    outcome = compare(low, high, published)
    what = "interval" if estimate.has_interval() else f"±{NO_INTERVAL_BAND:.0%} band (no interval)"
    where = {REPLICATED: "lies inside", DEPARTS: "lies wholly outside", INCONCLUSIVE: "straddles a boundary of"}[outcome]
    # One digit more than the table: an interval ending at 1.703 must not read as ending at the boundary 1.7.
    return Verdict(outcome, f"{what} {range_text(low, high, 4)} {where} {range_text(*published)}")


def combined_verdict(parts: tuple[Estimate, ...], published: tuple[float, float]) -> Verdict:
    """Each SAE judged alone; the claim is replicated (or departs) only if every SAE is."""
    verdicts = [verdict(part, published) for part in parts]
    outcomes = {v.outcome for v in verdicts}
    outcome = outcomes.pop() if len(outcomes) == 1 else INCONCLUSIVE
    if len(parts) == 1:
        return verdicts[0]
    counts = ", ".join(f"{sum(v.outcome == o for v in verdicts)} {o}" for o in (REPLICATED, DEPARTS, INCONCLUSIVE)
                       if any(v.outcome == o for v in verdicts))
    return Verdict(outcome, f"{len(parts)} SAEs judged one by one ({counts}) against {range_text(*published)}")


# ---- reading the metrics -----------------------------------------------------------------------

def need(value: Any, what: str) -> Any:
    if value is None:
        raise MissingMetric(what)
    return value


def focus_sae(inputs: "ReportInputs") -> tuple[str, int]:
    hooks, widths = inputs.param("earlier_components.hooks") or [], inputs.param("earlier_components.widths") or []
    if not hooks or not widths:
        raise MissingMetric("no focus SAE: earlier_components.hooks / widths are empty")
    return hooks[0], int(widths[0])


def sae_widths_at(inputs: "ReportInputs", hook: str) -> list[int]:
    """The widths this run's `sae` section gives `hook` (the width sweep, or the extra grid)."""
    widths = set()
    if hook in (inputs.param("sae.hooks") or []):
        widths |= set(inputs.param("sae.widths") or [])
    if hook in (inputs.param("sae.extra_hooks") or []):
        widths |= set(inputs.param("sae.extra_widths") or [])
    return sorted(widths)


def section_saes(inputs: "ReportInputs", section: str,
                 keep: Callable[[str], bool] = lambda hook: True) -> list[tuple[str, int]]:
    """(hook, width) of the SAEs `section` names (its `hooks` x `widths`), hooks filtered by `keep`."""
    widths = inputs.param(f"{section}.widths") or []
    return [(h, int(w)) for h in inputs.param(f"{section}.hooks") or [] if keep(h) for w in widths]


def per_sae_files(inputs: "ReportInputs", folder: str, saes: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    """The metrics files `<folder>/<hook>-<width>.json` of `saes` that exist."""
    found = {(h, w): inputs.json(f"{folder}/{sae_name(h, w)}.json") for h, w in saes}
    return {key: m for key, m in found.items() if m is not None}


def is_resid(hook: str) -> bool:
    return ".hook_resid_" in hook


def is_attn_z(hook: str) -> bool:
    return hook.endswith("attn.hook_z")


def spread(value: float, values: list[float], over: str, detail: str = "") -> Estimate:
    """`value` with the range of `values` (one per SAE) as its interval; a single value has none."""
    if len(values) < 2:
        return Estimate(value, detail=detail)
    return Estimate(value, min(values), max(values), f"spread over {over}", detail)


def widths_text(widths: list[int]) -> str:
    return f"widths {widths[0]} - {widths[-1]}" if len(widths) > 1 else f"width {widths[0]}"


# ---- the claims' measurements ------------------------------------------------------------------

def focus_hook_probes(inputs: "ReportInputs") -> tuple[dict[int, dict], str, int]:
    """{width: probes metrics} at the focus hook, the hook, and the focus width."""
    hook, width = focus_sae(inputs)
    files = per_sae_files(inputs, "probes", [(hook, w) for w in sae_widths_at(inputs, hook)])
    by_width = {w: m for (_, w), m in files.items()}
    need(by_width.get(width), f"probes/{sae_name(hook, width)}.json")
    return by_width, hook, width


def probe_r2(key: str) -> Callable[["ReportInputs"], Estimate]:
    def measure(inputs: "ReportInputs") -> Estimate:
        by_width, hook, width = focus_hook_probes(inputs)
        over = f"{widths_text(sorted(by_width))} at {hook}"
        return spread(by_width[width][key], [m[key] for m in by_width.values()], over)
    return measure


def nonlinear_fvu_flat(inputs: "ReportInputs") -> Estimate:
    """The nonlinear FVU of each wider SAE over the narrowest's; the value is the widest's."""
    by_width, hook, _ = focus_hook_probes(inputs)
    widths = sorted(by_width)
    if len(widths) < 2:
        raise MissingMetric(f"probes of >= 2 widths at {hook} (has {widths_text(widths)})")
    narrowest = by_width[widths[0]]["nonlinear_fvu"]
    ratios = {w: by_width[w]["nonlinear_fvu"] / narrowest for w in widths[1:]}
    detail = ", ".join(f"{w}: {num(by_width[w]['nonlinear_fvu'])}" for w in widths)
    return spread(ratios[widths[-1]], list(ratios.values()), f"widths {widths[1]} - {widths[-1]} vs {widths[0]} at {hook}",
                  f"nonlinear FVU by width: {detail}")


def per_token_scaling(inputs: "ReportInputs") -> Estimate:
    """R² of the narrowest-to-widest pair at the focus hook; spread over every width pair."""
    hook, _ = focus_sae(inputs)
    scaling = need(inputs.json("scaling.json"), "scaling.json")
    per_token = need((scaling.get(hook) or {}).get("per_token_r2") or None, f"scaling.json: {hook}.per_token_r2")
    pairs = {tuple(int(w) for w in key.split("_to_")): r2 for key, r2 in per_token.items()}
    longest = max(pairs, key=lambda pair: pair[1] / pair[0])
    over = f"the {len(pairs)} width pairs at {hook}"
    return spread(pairs[longest], list(pairs.values()), over, f"{longest[0]} → {longest[1]}")


def component_ce_share(inputs: "ReportInputs") -> Estimate:
    """n's % CE recovered over its % variance restored, at the focus SAE; spread over the stage's SAEs."""
    focus = sae_name(*focus_sae(inputs))
    table = need(inputs.json("component_ce.json"), "component_ce.json")
    rows = {name: table[name] for name in (sae_name(h, w) for h, w in section_saes(inputs, "component_ce")) if name in table}
    row = need(rows.get(focus), f"component_ce.json: {focus}")
    ratios = [r["ce_recovered_nonlinear_error"] / r["variance_recovered_nonlinear_error"] for r in rows.values()]
    detail = (f"{focus}: n {row['ce_recovered_nonlinear_error']:.0f}% of CE, "
              f"{row['variance_recovered_nonlinear_error']:.0f}% of variance; "
              f"ê {row['ce_recovered_linear_error']:.0f}% / {row['variance_recovered_linear_error']:.0f}%")
    value = row["ce_recovered_nonlinear_error"] / row["variance_recovered_nonlinear_error"]
    return spread(value, ratios, f"the {len(rows)} component_ce SAEs", detail)


def error_sae_ratio(inputs: "ReportInputs") -> Estimate:
    """FVU of the SAE trained on n over that of the SAE trained on ê, at the focus SAE."""
    focus = focus_sae(inputs)
    files = per_sae_files(inputs, "error_saes", section_saes(inputs, "error_saes"))
    fvu = {key: (m["by_component"]["nonlinear_error"]["fvu"], m["by_component"]["linear_error"]["fvu"])
           for key, m in files.items()}
    ratios = {key: on_n / on_e_hat for key, (on_n, on_e_hat) in fvu.items()}
    need(files.get(focus), f"error_saes/{sae_name(*focus)}.json")
    detail = f"FVU on n {num(fvu[focus][0])}, on ê {num(fvu[focus][1])}"
    return spread(ratios[focus], list(ratios.values()), f"the {len(ratios)} error_saes SAEs", detail)


def focus_pursuit(inputs: "ReportInputs") -> tuple[dict[tuple[str, int], dict], tuple[str, int]]:
    focus = focus_sae(inputs)
    files = per_sae_files(inputs, "pursuit", section_saes(inputs, "pursuit", keep=lambda hook: hook == focus[0]))
    need(files.get(focus), f"pursuit/{sae_name(*focus)}.json")
    return files, focus


def pursuit_ratio(inputs: "ReportInputs") -> Estimate:
    """Pursuit FVU over encoder FVU at the focus SAE; spread over the pursuit widths at its hook."""
    files, focus = focus_pursuit(inputs)
    ratios = {key: m["pursuit_fvu"] / m["encoder_fvu"] for key, m in files.items()}
    m = files[focus]
    detail = (f"FVU {num(m['encoder_fvu'])} → {num(m['pursuit_fvu'])}; nonlinear FVU "
              f"{num(m['encoder_nonlinear_fvu'])} → {num(m['pursuit_nonlinear_fvu'])}")
    return spread(ratios[focus], list(ratios.values()), f"{widths_text(sorted(w for _, w in files))} at {focus[0]}", detail)


def earlier_vs_pursuit(inputs: "ReportInputs") -> Estimate:
    """R² of n from the earlier SAE outputs over the share of the nonlinear FVU pursuit removes."""
    files, focus = focus_pursuit(inputs)
    earlier = need(inputs.json("earlier_components.json"), "earlier_components.json")
    explained = need(earlier.get("earlier_sae_outputs"), "earlier_components.json: earlier_sae_outputs")["nonlinear_error"]
    m = files[focus]
    removed = 1 - m["pursuit_nonlinear_fvu"] / m["encoder_nonlinear_fvu"]
    detail = (f"earlier SAE outputs explain {100 * explained:.1f}% of n; "
              f"pursuit removes {100 * removed:.1f}% of the nonlinear FVU")
    if removed <= 0:
        raise MissingMetric(f"a positive pursuit gain to divide by ({detail})")
    return Estimate(explained / removed, detail=detail)


def kl_ratio(keep: Callable[[str], bool], what: str) -> Callable[["ReportInputs"], Estimate]:
    """The KL ratio of every interventions SAE at hooks `keep` accepts, each judged with its own 95% CI."""
    def measure(inputs: "ReportInputs") -> Estimate:
        files = need(per_sae_files(inputs, "interventions", section_saes(inputs, "interventions", keep)) or None,
                     f"an interventions metrics file of a {what} hook in interventions.hooks")
        parts = tuple(ratio_estimate(m) for m in files.values())
        judged = [bounds(p) for p in parts if p.value is not None and math.isfinite(p.value)]
        shown = headline(files, inputs)
        primary = files[shown].get("positions", "scored")
        kind = "95% CI" if all(p.has_interval() for p in parts) else f"95% CI, or ±{NO_INTERVAL_BAND:.0%} where none"
        interval = kind if len(parts) == 1 else f"hull over {len(parts)} SAEs of: {kind}"
        return Estimate(files[shown].get("kl_ratio_substitution_vs_epsilon_random"),
                        min((low for low, _ in judged), default=None), max((high for _, high in judged), default=None),
                        f"{interval}; positions '{primary}'", kl_ratio_detail(files, shown, primary), parts)
    return measure


def kl_ratio_detail(files: dict[tuple[str, int], dict], shown: tuple[str, int], primary: str) -> str:
    """Which SAE the value is, each SAE's ratio when there are several, and the ratio with Gurnee's
    splice positions (`by_positions.all`) where the metrics have it."""
    details = [sae_name(*shown)]
    if len(files) > 1:
        details.append("each SAE: " + "; ".join(f"{sae_name(*key)} {describe_ratio(m)}" for key, m in files.items()))
    gurnee = {key: m["by_positions"]["all"] for key, m in files.items()
              if primary != "all" and "all" in (m.get("by_positions") or {})}
    if gurnee:
        label = (lambda key: f"{sae_name(*key)} ") if len(files) > 1 else (lambda key: "")
        details.append("all positions (Gurnee's splice): "
                       + "; ".join(label(key) + describe_ratio(m) for key, m in gurnee.items()))
    return "; ".join(details)


def ratio_estimate(m: dict) -> Estimate:
    value, low, high = m.get("kl_ratio_substitution_vs_epsilon_random"), m.get("kl_ratio_ci_low"), m.get("kl_ratio_ci_high")
    if value is None:
        return Estimate(None, missing="the KL ratio is undefined (null)")
    return Estimate(value, low, high, "95% CI") if low is not None and high is not None else Estimate(value)


def describe_ratio(m: dict) -> str:
    low, high = m.get("kl_ratio_ci_low"), m.get("kl_ratio_ci_high")
    interval = f" [{num(low)}, {num(high)}]" if low is not None and high is not None else " (no CI)"
    return num(m.get("kl_ratio_substitution_vs_epsilon_random")) + interval


def headline(files: dict[tuple[str, int], Any], inputs: "ReportInputs") -> tuple[str, int]:
    """The SAE whose value the table shows: the focus SAE if it is among `files`, else the first."""
    try:
        focus = focus_sae(inputs)
    except MissingMetric:
        focus = None
    return focus if focus in files else next(iter(files))


def cov_narrows_gap(inputs: "ReportInputs") -> Estimate:
    """KL ratio vs cov_random over KL ratio vs epsilon_random, at every resid interventions SAE."""
    files = need(per_sae_files(inputs, "interventions", section_saes(inputs, "interventions", is_resid)) or None,
                 "an interventions metrics file of a residual-stream hook in interventions.hooks")
    ratios = {}
    for key, m in files.items():
        cov, eps = m.get("kl_ratio_substitution_vs_cov_random"), m.get("kl_ratio_substitution_vs_epsilon_random")
        if cov is not None and eps:
            ratios[key] = cov / eps
    shown = headline(files, inputs)
    value = need(ratios.get(shown), f"both KL ratios of {sae_name(*shown)}")
    detail = "; ".join(f"{sae_name(*key)} {num(files[key]['kl_ratio_substitution_vs_cov_random'])} / "
                       f"{num(files[key]['kl_ratio_substitution_vs_epsilon_random'])}" for key in ratios)
    return spread(value, list(ratios.values()), f"the {len(ratios)} residual-stream interventions SAEs",
                  f"KL ratio vs cov_random / vs epsilon_random: {detail}")


CLAIMS: list[Claim] = [
    Claim("about half of the error vector is linear", "claim_error_vector_r2",
          "probes/<focus SAE>.json error_vector_r2; spread over the sae widths at the focus hook",
          "error-vector R² of the focus SAE", probe_r2("error_vector_r2")),
    Claim("> 90% of the error norm is linear", "claim_error_norm_r2",
          "probes/<focus SAE>.json error_norm_r2; spread over the sae widths at the focus hook",
          "R² of ‖e‖ from x of the focus SAE", probe_r2("error_norm_r2")),
    Claim("the nonlinear FVU is flat in width", "claim_nonlinear_fvu_flat",
          "probes/<focus hook>-<width>.json nonlinear_fvu at every sae width",
          "nonlinear FVU of the widest SAE ÷ the narrowest's (interval: every wider SAE's)", nonlinear_fvu_flat),
    Claim("per-token error scaling is predictable", "claim_per_token_scaling",
          "scaling.json <focus hook>.per_token_r2",
          "per-token R² of ‖e‖ at the widest width from ‖e‖ at the narrowest (interval: every width pair)",
          per_token_scaling),
    Claim("the nonlinear error carries a proportional share of CE", "claim_component_ce",
          "component_ce.json <focus SAE>; spread over the component_ce SAEs",
          "n's % CE recovered ÷ its % variance restored", component_ce_share),
    Claim("the SAE trained on n is worse than the SAE on ê", "claim_error_saes",
          "error_saes/<focus SAE>.json by_component.*.fvu",
          "FVU of the SAE on n ÷ FVU of the SAE on ê", error_sae_ratio),
    Claim("gradient pursuit gives only a slight gain", "claim_pursuit",
          "pursuit/<focus SAE>.json; spread over the pursuit widths at the focus hook",
          "pursuit FVU ÷ encoder FVU", pursuit_ratio),
    Claim("earlier components reduce n more than pursuit", "claim_earlier_vs_pursuit",
          "earlier_components.json earlier_sae_outputs.nonlinear_error and pursuit/<focus SAE>.json",
          "R² of n from earlier SAE outputs ÷ share of the nonlinear FVU pursuit removes", earlier_vs_pursuit),
    Claim("KL ratio 2 - 4.5x on the residual stream", "kl_ratio_resid",
          "interventions/<hook>-<width>.json of every residual-stream hook of interventions.hooks",
          "KL(substitution) ÷ KL(epsilon_random) of each resid SAE", kl_ratio(is_resid, "residual-stream")),
    Claim("KL ratio 0.9 - 1.7x on attn_z", "kl_ratio_attn_z",
          "interventions/<hook>-<width>.json of the attn.hook_z hooks of interventions.hooks",
          "KL(substitution) ÷ KL(epsilon_random) of each attn_z SAE", kl_ratio(is_attn_z, "attn_z")),
    Claim("the covariance baseline narrows the gap", "claim_cov_narrows_gap",
          "interventions/<hook>-<width>.json of every residual-stream hook: both KL ratios",
          "KL ratio vs cov_random ÷ KL ratio vs epsilon_random", cov_narrows_gap),
]


def measure(claim: Claim, inputs: "ReportInputs") -> Estimate:
    """The claim's estimate; an absent file, key or setting makes a `missing` one."""
    try:
        return claim.measure(inputs)
    except MissingMetric as absent:
        return Estimate(None, missing=str(absent))
    except KeyError as key:
        return Estimate(None, missing=f"metric key {key}")
    except ZeroDivisionError:
        return Estimate(None, missing="a nonzero denominator (a metric it divides by is 0)")


def claims_table(inputs: "ReportInputs") -> list[dict]:
    """One row per claim: the published value and range, this run's value, interval and verdict."""
    rows = []
    for claim in CLAIMS:
        estimate = measure(claim, inputs)
        judged = verdict(estimate, claim.published_range)
        rows.append({
            "claim": claim.name, "published_key": claim.published_key, "published": PUBLISHED[claim.published_key].text,
            "published_range": claim.published_range, "reads": claim.reads, "rule": claim.rule(),
            "value": estimate.value, "low": estimate.low, "high": estimate.high, "interval": interval_text(estimate),
            "detail": estimate.detail, "missing": estimate.missing, "verdict": judged.outcome, "reason": judged.reason,
        })
    return rows


HEADER = ["claim", "published", "this run", "interval", "verdict", "rule", "reads"]


def row_cells(row: dict) -> list[str]:
    """The cells of one claim, as the report and the Markdown table show them."""
    this_run = "n/a" if row["missing"] else num(row["value"]) + (f" ({row['detail']})" if row["detail"] else "")
    verdict_cell = f"{row['verdict']}: {row['reason']}"
    return [row["claim"], row["published"], this_run, row["interval"] or "n/a", verdict_cell, row["rule"], row["reads"]]


def markdown_line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(rows: list[dict]) -> str:
    return "\n".join([markdown_line(HEADER), markdown_line(["---"] * len(HEADER)), *(markdown_line(row_cells(r)) for r in rows)]) + "\n"


def side_by_side(runs: dict[str, list[dict]]) -> str:
    """One Markdown table of every claim across runs: the published range, then each run's value,
    interval and verdict."""
    names = list(runs)
    header = ["claim", "published", *names]
    lines = [markdown_line(header), markdown_line(["---"] * len(header))]
    for i, claim in enumerate(CLAIMS):
        cells = [claim.name, range_text(*claim.published_range)]
        for name in names:
            row = runs[name][i]
            value = "n/a" if row["missing"] else num(row["value"])
            cells.append(f"{row['verdict']}: {value}" + (f" {row['interval']}" if row["interval"] else ""))
        lines.append(markdown_line(cells))
    return "\n".join(lines) + "\n"


def rows_of_run(run: str, repo: Path = Path(".")) -> list[dict]:
    """The claims of a run: a folder holding its metrics/ and params.yaml (e.g. runs/gemma3), or a
    git revision (a branch, tag or commit) of `repo`, whose metrics/ and params.yaml are read out
    of git into a temporary folder."""
    import subprocess
    import tarfile
    import tempfile
    from io import BytesIO

    from pipeline.config import load_params
    from pipeline.report import ReportInputs

    folder = Path(run)
    if (folder / "metrics").is_dir() and (folder / "params.yaml").is_file():
        return claims_table(ReportInputs(folder / "metrics", folder / "figures", load_params(folder / "params.yaml")))
    rev = run
    archive = subprocess.run(["git", "archive", rev, "metrics", "params.yaml"], cwd=repo, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--compare {rev}: git archive failed: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        inputs = ReportInputs(Path(tmp) / "metrics", Path(tmp) / "figures", load_params(Path(tmp) / "params.yaml"))
        return claims_table(inputs)


def main(argv: Optional[list[str]] = None) -> None:
    from pipeline.config import load_params
    from pipeline.report import ReportInputs

    parser = argparse.ArgumentParser(description="Print the claim-by-claim verdict as a Markdown table.")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--compare", nargs="+", metavar="RUN",
                        help="instead, one table of these runs side by side: git revisions, or folders holding metrics/ and params.yaml")
    args = parser.parse_args(argv)
    if args.compare:
        print(side_by_side({run: rows_of_run(run) for run in args.compare}), end="")
        return
    inputs = ReportInputs(args.metrics, Path("figures"), load_params(args.params))
    print(markdown(claims_table(inputs)), end="")


if __name__ == "__main__":
    main()
