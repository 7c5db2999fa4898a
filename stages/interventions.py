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
from pipeline.interventions import activation_stats, run_interventions, summarise
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
        axes[0].hist(results.kl[n].clip(bins[0]), bins=bins, histtype="step", label=f"{n} (mean {results.kl[n].mean():.3g})")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("KL(P_clean ‖ P_intervened) per token (nats, log scale)")
    axes[0].set_ylabel("tokens")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"ratio substitution / epsilon_random: {shown(metrics['kl_ratio_substitution_vs_epsilon_random'])}", fontsize=9)
    if results.single_kl:
        for n, kl in results.single_kl.items():
            axes[1].plot(np.arange(kl.shape[1]), kl.mean(0), "o-", label=n)
        axes[1].set_yscale("log")
        axes[1].set_xlabel(f"tokens after the intervened position p = {p}")
        axes[1].set_ylabel("mean KL (nats)")
        axes[1].legend(fontsize=8)
        axes[1].set_title("single-position intervention", fontsize=9)
    fig.suptitle(f"{name}: splicing the SAE vs. random perturbations of the same size", fontsize=10)
    return save(fig, path)


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
        print(f"interventions {args.sae.name}: " + ", ".join(f"{n} KL {metrics['interventions'][n]['kl']:.4f}" for n in INTERVENTIONS))
        print(f"KL ratio substitution / epsilon_random {shown(metrics['kl_ratio_substitution_vs_epsilon_random'])} "
              f"[{shown(metrics['kl_ratio_ci_low'])}, {shown(metrics['kl_ratio_ci_high'])}], CE score {shown(metrics['ce_score'], 3)}")


if __name__ == "__main__":
    run_and_exit(main)
