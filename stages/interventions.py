"""DVC stage `interventions` (one per SAE): splice the SAE's reconstruction and the control
perturbations into the LM at the SAE's hook; KL and CE per token, summarised with intervals."""

from pathlib import Path

import numpy as np

from pipeline.activation_store import open_store, store_path
from pipeline.config import Hook
from pipeline.replacements import INTERVENTIONS
from pipeline.devices import resolve_device
from pipeline.models import load_model
from pipeline.params_check import load_checked_params
from pipeline.interventions import HALF_DRAW_SPLITS, activation_stats, run_interventions, summarise
from pipeline.plots import new_figure, save
from pipeline.sae_inference import check_sae_fits, load_sae
from pipeline.tokens import TokenStore
from stages.common import per_sae_arguments, run_and_exit, shown, stage, write_json

SHOWN = ("substitution", "epsilon_random", "cov_random", "theta_random_sae_norm", "norm_corrected")


def draw(results, metrics: dict, name: str, p: int | None, path: Path) -> Path:
    fig, axes = new_figure(11, 4, ncols=2)
    positive = np.concatenate([results.kl[n] for n in SHOWN])
    bins = np.geomspace(max(positive[positive > 0].min(), 1e-6), positive.max(), 60)
    for n in SHOWN:
        label = f"{n}, per token the mean of {metrics['n_draws']} draws" if n == "epsilon_random" else n
        axes[0].hist(results.kl[n].clip(bins[0]), bins=bins, histtype="step", label=f"{label} (mean {results.kl[n].mean():.3g})")
    axes[0].set_xscale("log")
    axes[0].set_xlabel(f"KL(P_clean ‖ P_intervened) per token (nats, log scale), positions: {metrics['positions']}")
    axes[0].set_ylabel("tokens")
    axes[0].legend(fontsize=7)
    title = ", ".join(f"{setting} {shown(m['kl_ratio_substitution_vs_epsilon_random'])}" for setting, m in metrics["by_positions"].items())
    axes[0].set_title(f"ratio substitution / epsilon_random, by positions: {title}", fontsize=9)
    if results.single is not None and len(results.single.substitution):
        single = metrics["single_position"]
        axes[1].plot(np.arange(results.single.substitution.shape[1]), results.single.substitution.mean(0), "o-", label="substitution")
        axes[1].plot(np.arange(results.single.draws.shape[2]), results.single.draws.mean((0, 1)), "o-",
                     label=f"epsilon_random (mean of {single['n_draws']} draws)")
        axes[1].set_yscale("log")
        axes[1].set_xlabel(f"tokens after the intervened position p = {p}")
        axes[1].set_ylabel("mean KL (nats)")
        axes[1].legend(fontsize=8)
        axes[1].set_title(f"single-position intervention ({single['n_contexts']} contexts)", fontsize=9)
    fig.suptitle(f"{name}: splicing the SAE vs. random perturbations of the same size", fontsize=10)
    return save(fig, path)


def interval(m: dict, key: str, prefix: str | None = None, digits: int = 2) -> str:
    """'value [low, high]' of metrics `m`, the interval keys being <prefix>_ci_low / _ci_high (prefix: `key` unless given)."""
    prefix = prefix or key
    return f"{shown(m[key], digits)} [{shown(m[f'{prefix}_ci_low'], digits)}, {shown(m[f'{prefix}_ci_high'], digits)}]"


def summary_lines(metrics: dict, p: int | None) -> list[str]:
    """The KL ratio and z-scores of each position setting, and the single-position ratios, for the log."""
    lines = []
    for setting, m in metrics["by_positions"].items():
        lines.append(f"positions {setting}: KL ratio substitution / epsilon_random {interval(m, 'kl_ratio_substitution_vs_epsilon_random', 'kl_ratio')} "
                     f"({m['n_tokens']} tokens x {m['n_draws']} draws)")
        halves = ("" if m["z_score_median_half_draws_min"] is None else
                  f"; over {HALF_DRAW_SPLITS} random halves of the draws it ranges {shown(m['z_score_median_half_draws_min'])}"
                  f"-{shown(m['z_score_median_half_draws_max'])}")
        lines.append(f"  z-scores: median {interval(m, 'z_score_median')}, share > 2 {interval(m, 'z_score_share_above_2')}{halves}")
    if "single_position" in metrics:
        s = metrics["single_position"]
        lines.append(f"single position p = {p}: KL ratio at p {interval(s, 'kl_ratio_at_p')}, after p {interval(s, 'kl_ratio_after_p')}; "
                     f"{s['n_contexts']} contexts x {s['n_draws']} draws ({s['n_contexts_excluded']} left out: a separator or "
                     "unscored position in the window)")
    return lines


def main() -> None:
    args = per_sae_arguments(__doc__, extra=(("--model", Path), ("--tokens", Path), ("--figure", Path)), store_out=False)
    store = store_path(args.activations, args.hook)
    reads = ["params.yaml:interventions,lm", str(args.model), str(args.tokens), str(store), str(args.sae)]
    with stage("interventions", reads=reads, writes=[str(args.metrics), str(args.figure)]):
        params = load_checked_params()
        cfg = params.interventions
        device = resolve_device(params.lm.device, "lm.device")
        acts = open_store(store)
        sae = load_sae(args.sae, device=str(device))
        check_sae_fits(sae, acts.shape[1], None, f"--sae {args.sae}")
        stats = activation_stats(acts)
        tokens = TokenStore.open(args.tokens)
        test_contexts = tokens.split.test_contexts(cfg.n_contexts)
        model = load_model(args.model, params.lm.compute_dtype, str(device))
        results = run_interventions(model, sae, Hook.parse(args.hook, "--hook"), tokens.contexts[test_contexts], tokens.mask[test_contexts], stats, cfg)
        metrics = summarise(results, cfg)
        write_json(args.metrics, metrics)
        draw(results, metrics, args.sae.name, cfg.single_position, args.figure)
        print(f"interventions {args.sae.name} (positions {metrics['positions']}): "
              + ", ".join(f"{n} KL {metrics['interventions'][n]['kl']:.4f}" for n in INTERVENTIONS))
        print(f"CE score {shown(metrics['ce_score'], 3)}")
        for line in summary_lines(metrics, cfg.single_position):
            print(line)


if __name__ == "__main__":
    run_and_exit(main)
