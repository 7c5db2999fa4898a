"""DVC stage `layer_sweep`: the pathological-error comparison across layers (every residual hook
in `interventions.hooks`) and the attention-z replication, from the `interventions` metrics."""

import argparse
import json
from pathlib import Path

from pipeline.config import Hook
from pipeline.params_check import load_checked_params
from pipeline.plots import new_figure, save
from pipeline.published import published_range, published_text
from pipeline.sae_config import sae_name
from stages.common import run_and_exit, shown, stage, write_csv, write_json


def all_positions_ratio(m: dict) -> dict:
    """The KL ratio with Gurnee's splice positions (every position), when that setting ran; else nulls."""
    gurnee = m.get("by_positions", {}).get("all", {})
    return {"kl_ratio_all_positions": gurnee.get("kl_ratio_substitution_vs_epsilon_random"),
            "kl_ratio_all_positions_ci_low": gurnee.get("kl_ratio_ci_low"),
            "kl_ratio_all_positions_ci_high": gurnee.get("kl_ratio_ci_high")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for option in ("--metrics-dir", "--out", "--plot", "--figure"):
        parser.add_argument(option, type=Path, required=True)
    args = parser.parse_args()
    with stage("layer_sweep", reads=["params.yaml:interventions", str(args.metrics_dir)], writes=[str(args.out), str(args.plot), str(args.figure)]):
        cfg = load_checked_params().interventions
        rows = []
        for hook_name in cfg.hooks:
            hook = Hook.parse(hook_name, "interventions.hooks")
            for width in cfg.widths:
                m = json.loads((args.metrics_dir / f"{sae_name(hook_name, width)}.json").read_text())
                rows.append({
                    "hook": hook_name, "site": hook.site, "layer": hook.layer, "width": width,
                    "kl_ratio": m["kl_ratio_substitution_vs_epsilon_random"], "kl_ratio_ci_low": m["kl_ratio_ci_low"],
                    "kl_ratio_ci_high": m["kl_ratio_ci_high"], "kl_ratio_vs_cov_random": m["kl_ratio_substitution_vs_cov_random"],
                    "kl_substitution": m["interventions"]["substitution"]["kl"], "kl_epsilon_random": m["interventions"]["epsilon_random"]["kl"],
                    "ce_score": m["ce_score"], **all_positions_ratio(m),
                })
        header = list(rows[0])
        write_csv(args.plot, header, ([r[h] for h in header] for r in rows if r["site"] in ("resid_post", "resid_pre")))
        fig, ax = new_figure()
        for width in cfg.widths:
            for site, marker in (("resid_post", "o-"), ("resid_pre", "^-"), ("mlp_out", "s"), ("attn_z", "D")):
                sel = [r for r in rows if r["site"] == site and r["width"] == width
                       and None not in (r["kl_ratio"], r["kl_ratio_ci_low"], r["kl_ratio_ci_high"])]
                if sel:
                    lows = [r["kl_ratio"] - r["kl_ratio_ci_low"] for r in sel]
                    highs = [r["kl_ratio_ci_high"] - r["kl_ratio"] for r in sel]
                    ax.errorbar([r["layer"] for r in sel], [r["kl_ratio"] for r in sel], yerr=[lows, highs], fmt=marker, capsize=3, label=f"{site}, width {width}")
                gurnee = [r for r in rows if r["site"] == site and r["width"] == width
                          and None not in (r["kl_ratio_all_positions"], r["kl_ratio_all_positions_ci_low"], r["kl_ratio_all_positions_ci_high"])]
                if gurnee:
                    lows = [r["kl_ratio_all_positions"] - r["kl_ratio_all_positions_ci_low"] for r in gurnee]
                    highs = [r["kl_ratio_all_positions_ci_high"] - r["kl_ratio_all_positions"] for r in gurnee]
                    ax.errorbar([r["layer"] + 0.25 for r in gurnee], [r["kl_ratio_all_positions"] for r in gurnee], yerr=[lows, highs],
                                fmt=marker[0], mfc="none", capsize=3, label=f"{site}, width {width}, every position (Gurnee)")
        ax.axhspan(*published_range("kl_ratio_resid"), color="grey", alpha=0.15, label=f"published residual ratio: {published_text('kl_ratio_resid')}")
        ax.axhline(1, color="black", linewidth=0.6)
        ax.set_xlabel("layer")
        ax.set_ylabel("KL(substitution) / KL(epsilon_random)")
        ax.set_title("How much worse than a random step of the same size is the SAE? (95% bootstrap CI)", fontsize=9)
        ax.legend(fontsize=7)
        save(fig, args.figure)
        write_json(args.out, {r["hook"] + f"-{r['width']}": {k: r[k] for k in ("kl_ratio", "kl_ratio_all_positions", "kl_ratio_vs_cov_random", "ce_score")}
                              for r in rows})
        for r in rows:
            gurnee = ("" if r["kl_ratio_all_positions"] is None else
                      f"; every position {shown(r['kl_ratio_all_positions'])} [{shown(r['kl_ratio_all_positions_ci_low'])}, "
                      f"{shown(r['kl_ratio_all_positions_ci_high'])}]")
            print(f"layer_sweep {r['hook']}-{r['width']}: KL ratio {shown(r['kl_ratio'])} [{shown(r['kl_ratio_ci_low'])}, {shown(r['kl_ratio_ci_high'])}]{gurnee}")


if __name__ == "__main__":
    run_and_exit(main)
