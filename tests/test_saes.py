"""SAE stages: metrics against numpy, sae-lens format round trips, seeding, pretrained loading, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from pipeline.activation_store import open_store
from pipeline.config import ConfigError, Hook
from pipeline.row_split import RowSplit
from pipeline.sae_config import SaeSetConfig, TrainSaeConfig
from pipeline.saes import build_training_sae, load_pretrained, save_sae, shuffled_batches, train_sae
from stages.common import METRIC_RTOL
from tests.conftest import REPO, params_with, run, run_stage, stages_to_rerun

SMOKE_HOOK = "blocks.2.hook_resid_post"
TINY_TRAIN = TrainSaeConfig(tokens=4096, batch_size=256, lr=2e-3, log_every=4, device="cpu")


@pytest.fixture(scope="module")
def smoke_acts(smoke_repo):
    return open_store(smoke_repo / f"artifacts/activations/{SMOKE_HOOK}.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("width", [128, 512])
def test_metrics_and_outputs_agree_with_sae_lens_and_numpy(smoke_repo, smoke_acts, width):
    """What sae_outputs stored (x_hat, L0, ||e|| on the fit and test rows; per-latent sums over the
    fit rows) and its test metrics, against sae-lens's own SAE run on the same rows and numpy."""
    from sae_lens import SAE

    name = f"{SMOKE_HOOK}-{width}"
    outputs = zarr.open_group(smoke_repo / f"artifacts/sae_outputs/{name}.zarr", mode="r")
    metrics = json.loads((smoke_repo / f"metrics/sae/{name}.json").read_text())
    split = RowSplit.of(smoke_acts)
    assert (outputs.attrs["first_store_row"], outputs.attrs["n_fit_rows"], outputs.attrs["n_test_rows"]) == (
        split.fit_rows.start, split.n_train_rows - split.fit_rows.start, split.n_test_rows)
    sae = SAE.load_from_disk(smoke_repo / f"artifacts/saes/{name}", device="cpu")
    x = smoke_acts[split.fit_rows.start :].astype(np.float32)
    with torch.no_grad():
        latents = sae.encode(torch.from_numpy(x))
        reference = sae.decode(latents).numpy().astype(np.float64)
    latents = latents.numpy().astype(np.float64)
    x_hat = outputs["x_hat"][:].astype(np.float64)
    np.testing.assert_allclose(x_hat, reference, rtol=1e-5, atol=1e-5 * np.abs(x).max())
    np.testing.assert_array_equal(outputs["l0"][:], (latents != 0).sum(1))
    x = x.astype(np.float64)
    np.testing.assert_allclose(outputs["error_norm"][:], np.linalg.norm(x - x_hat, axis=1), rtol=1e-4)
    n_fit = split.n_train_rows - split.fit_rows.start
    np.testing.assert_allclose(outputs["latent_fit_sum"][:], latents[:n_fit].sum(0), rtol=1e-5)
    np.testing.assert_array_equal(outputs["latent_fit_count"][:], (latents[:n_fit] != 0).sum(0))

    test_x, test_x_hat = x[n_fit:], x_hat[n_fit:]
    fvu = ((test_x - test_x_hat) ** 2).sum() / ((test_x - test_x.mean(0)) ** 2).sum()
    assert metrics["fvu"] == pytest.approx(fvu, rel=METRIC_RTOL)
    assert metrics["explained_variance"] == pytest.approx(1 - fvu, rel=METRIC_RTOL)
    assert metrics["n_test_tokens"] == len(test_x)
    assert metrics["l0"] == pytest.approx(16.0)  # TopK with k=16
    assert metrics["dead_fraction"] == pytest.approx(1 - (latents[n_fit:] != 0).any(0).mean())


@pytest.mark.slow
def test_fvu_falls_as_width_grows_at_fixed_k(smoke_repo):
    summary = json.loads((smoke_repo / "metrics/sae_summary.json").read_text())["saes"]
    for hook in (SMOKE_HOOK, "blocks.2.hook_mlp_out"):
        assert summary[f"{hook}-512"]["fvu"] < summary[f"{hook}-128"]["fvu"], summary
        assert summary[f"{hook}-512"]["l0"] == summary[f"{hook}-128"]["l0"] == 16


@pytest.mark.slow
def test_training_curve_is_a_dvc_plot(smoke_repo):
    out = run(["dvc", "plots", "show", "--json"], smoke_repo).stdout
    assert f"metrics/train_sae/{SMOKE_HOOK}-128.csv" in out
    lines = (smoke_repo / f"metrics/train_sae/{SMOKE_HOOK}-128.csv").read_text().splitlines()
    assert lines[0] == "step,tokens,loss,explained_variance,l0,dead_fraction" and len(lines) > 5
    first, last = (float(v) for v in (lines[1].split(",")[3], lines[-1].split(",")[3]))
    assert last > first  # it learned


@pytest.mark.slow
def test_saved_sae_reloads_with_identical_outputs(smoke_acts, tmp_path):
    cfg = SaeSetConfig(hooks=[SMOKE_HOOK], widths=[64], k=8)
    sae, _ = train_sae(
        smoke_acts,
        int(smoke_acts.attrs["n_train_rows"]),
        64,
        cfg,
        TINY_TRAIN,
        {"hook_name": SMOKE_HOOK},
        progress=False,
    )
    save_sae(sae, tmp_path / "sae")
    from sae_lens import SAE

    reloaded = SAE.load_from_disk(tmp_path / "sae")
    assert reloaded.cfg.metadata.hook_name == SMOKE_HOOK and reloaded.cfg.d_sae == 64
    x = torch.from_numpy(smoke_acts[:200])
    with torch.no_grad():
        # The inference format folds the decoder norms into the encoder: equal up to float rounding.
        torch.testing.assert_close(reloaded(x), sae.eval()(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(reloaded(x), SAE.load_from_disk(tmp_path / "sae")(x))


@pytest.mark.slow
def test_stage_outputs_equal_a_fresh_load_of_the_saved_sae(smoke_repo, smoke_acts):
    from sae_lens import SAE

    name = f"{SMOKE_HOOK}-512"
    sae = SAE.load_from_disk(smoke_repo / f"artifacts/saes/{name}")
    group = zarr.open_group(smoke_repo / f"artifacts/sae_outputs/{name}.zarr", mode="r")
    x = torch.from_numpy(smoke_acts[int(group.attrs["first_store_row"]) :])
    with torch.no_grad():
        assert np.array_equal(sae(x).numpy(), group["x_hat"][:])


@pytest.mark.slow
def test_same_seed_same_weights(smoke_acts):
    cfg = SaeSetConfig(hooks=[SMOKE_HOOK], widths=[64], k=8)
    n_train = int(smoke_acts.attrs["n_train_rows"])

    def weights(seed: int) -> dict:
        train = TrainSaeConfig(**{**TINY_TRAIN.__dict__, "seed": seed})
        sae, _ = train_sae(smoke_acts, n_train, 64, cfg, train, {}, progress=False)
        return {k: v.clone() for k, v in sae.state_dict().items()}

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["W_enc"], c["W_enc"])


def test_shuffled_batches_cover_train_rows_only(tmp_path):
    store = zarr.create_array(tmp_path / "a.zarr", shape=(1300, 2), chunks=(64, 2), dtype="float32")
    store[:] = np.repeat(np.arange(1300, dtype=np.float32)[:, None], 2, axis=1)
    stream = shuffled_batches(store, n_rows=1000, batch_size=100, shuffle_chunks=3, seed=0)
    seen = np.concatenate([next(stream)[:, 0].numpy() for _ in range(50)])  # five epochs' worth
    counts = np.bincount(seen.astype(int), minlength=1300)
    assert counts[1000:].sum() == 0
    assert counts[:1000].min() >= 4 and counts[:1000].max() <= 6
    again = shuffled_batches(store, n_rows=1000, batch_size=100, shuffle_chunks=3, seed=0)
    assert torch.equal(next(again), torch.from_numpy(np.repeat(seen[:100, None], 2, axis=1)))


def test_local_pretrained_release_loads_in_sae_lens_format(tmp_path):
    cfg = SaeSetConfig(
        source="pretrained",
        hooks=["blocks.4.hook_resid_post"],
        widths=[2048],
        release={"resid_post": str(tmp_path / "release")},
        id_template="layer_{layer}/width_{width_k}k/canonical",
    )
    torch.manual_seed(0)
    saved = build_training_sae(cfg, d_in=32, width=2048, dtype="float32", device="cpu")
    save_sae(saved, tmp_path / "release" / "layer_4" / "width_2k" / "canonical")
    loaded = load_pretrained(cfg, Hook("resid_post", 4), 2048, d_in=32)
    from sae_lens import SAE

    direct = SAE.load_from_disk(tmp_path / "release" / "layer_4" / "width_2k" / "canonical")
    assert torch.equal(loaded.W_dec, direct.W_dec) and torch.equal(loaded.W_enc, direct.W_enc)
    save_sae(loaded, tmp_path / "copied")  # what train_sae does with a pretrained SAE
    assert torch.equal(SAE.load_from_disk(tmp_path / "copied").W_enc, direct.W_enc)

    with pytest.raises(
        ConfigError,
        match=r"sae\.release\[resid_post\] / sae\.id_template .*d_in is 32, but the hook's activations have width 576",
    ):
        load_pretrained(cfg, Hook("resid_post", 4), 2048, d_in=576)
    with pytest.raises(ConfigError, match=r"sae\.id_template: 'layer_5/width_2k/canonical' .* is not under"):
        load_pretrained(cfg, Hook("resid_post", 5), 2048, d_in=32)


def test_unknown_pretrained_id_names_the_key():
    cfg = SaeSetConfig(
        source="pretrained",
        hooks=["blocks.12.hook_resid_post"],
        widths=[12345],
        release={"resid_post": "gemma-scope-2b-pt-res-canonical"},
        id_template="layer_{layer}/width_{width_k}k/canonical",
    )
    with pytest.raises(
        ConfigError,
        match=r"sae\.id_template: 'layer_12/width_12k/canonical' .* not in release .*layer_12/width_16k/canonical",
    ):
        load_pretrained(cfg, Hook("resid_post", 12), 12345, d_in=2304)
    cfg.release = {"resid_post": "gemma-scope-9000b"}
    with pytest.raises(
        ConfigError, match=r"sae\.release: 'gemma-scope-9000b' .* neither a local directory nor a sae-lens release"
    ):
        load_pretrained(cfg, Hook("resid_post", 12), 16384, d_in=2304)


def test_paper_scale_names_real_gemma_scope_saes():
    """Every (hook, width) of scale=paper resolves in sae-lens's directory (offline)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import section
    from pipeline.saes import validate_pretrained

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        params = OmegaConf.create(OmegaConf.to_container(compose("config", overrides=["scale=paper"])))
    cfg = section(params, "sae", SaeSetConfig)
    pairs = [validate_pretrained(cfg, hook, width) for hook in cfg.parsed_hooks() for width in cfg.widths]
    assert ("gemma-scope-2b-pt-res-canonical", "layer_12/width_65k/canonical") in pairs
    assert ("gemma-scope-2b-pt-att-canonical", "layer_12/width_16k/canonical") in pairs


def test_empty_or_bad_sae_lists_name_the_key():
    with pytest.raises(ConfigError, match=r"^sae\.widths: the list is empty"):
        SaeSetConfig(widths=[])
    with pytest.raises(ConfigError, match=r"^sae\.hooks\[0\]: unknown hook"):
        SaeSetConfig(hooks=["blocks.2.resid"])
    with pytest.raises(ConfigError, match=r"^sae\.k: must be in \[1, width\]"):
        SaeSetConfig(widths=[16], k=32)


def test_width_x_k_grid_is_checked_and_named():
    cfg = SaeSetConfig(hooks=["blocks.2.hook_resid_post"], widths=[128, 512], k=16, ks=[8, 32], k_hooks=["blocks.2.hook_resid_post"])
    assert cfg.k_grid() == [("blocks.2.hook_resid_post", w, k) for w in (128, 512) for k in (8, 32)]
    assert cfg.names()[-1] == "blocks.2.hook_resid_post-512-k32" and len(cfg.names()) == 6
    for kwargs, message in [
        (dict(ks=[8]), r"^sae\.ks / sae\.k_hooks: give both"),
        (dict(ks=[16], k_hooks=["blocks.2.hook_resid_post"]), r"^sae\.ks\[0\]: 16 must .* differ from sae\.k"),
        (dict(ks=[256], k_hooks=["blocks.2.hook_resid_post"]), r"^sae\.ks\[0\]: 256 must be in \[1, 128\]"),
        (dict(ks=[8], k_hooks=["blocks.1.hook_resid_post"]), r"^sae\.k_hooks\[0\]: 'blocks\.1\.hook_resid_post' is not in sae\.hooks"),
        (dict(ks=[8], k_hooks=["blocks.2.hook_resid_post"], architecture="standard"), r"^sae\.ks: a width x k grid needs"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SaeSetConfig(hooks=["blocks.2.hook_resid_post"], widths=[128, 512], k=16, **kwargs)


@pytest.mark.slow
def test_width_x_k_grid_trains_at_each_k_and_draws_contours(smoke_repo):
    summary = json.loads((smoke_repo / "metrics/sae_summary.json").read_text())["saes"]
    for w in (128, 512):
        assert summary[f"{SMOKE_HOOK}-{w}-k8"]["l0"] == 8 and summary[f"{SMOKE_HOOK}-{w}-k8"]["k"] == 8
        assert summary[f"{SMOKE_HOOK}-{w}-k8"]["fvu"] > summary[f"{SMOKE_HOOK}-{w}"]["fvu"]  # fewer active latents
    (grid,) = json.loads((smoke_repo / "metrics/contours.json").read_text())["grids"].values()
    assert sorted((row["width"], row["k"]) for row in grid) == [(128, 8), (128, 16), (512, 8), (512, 16)]
    for row in grid:
        probes = json.loads((smoke_repo / f"metrics/probes/{row['sae']}.json").read_text())
        assert row["nonlinear_fvu"] == probes["nonlinear_fvu"] and row["l0"] == row["k"]
    assert (smoke_repo / f"figures/contours/{SMOKE_HOOK}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_empty_width_list_fails_the_dag_by_name(smoke_repo, tmp_path):
    args = ["--metrics-dir", str(smoke_repo / "metrics/sae"), "--out", str(tmp_path / "s.json")]
    result = run_stage("sae_summary", args, tmp_path, params_with(smoke_repo, "sae", "widths", []), check=False)
    assert result.returncode == 2 and "sae.widths: the list is empty" in result.stderr


@pytest.mark.slow
def test_train_sae_param_reruns_only_sae_stages(smoke_repo):
    ran = stages_to_rerun(smoke_repo, "train_sae", "lr", 0.001)
    # (--dry cannot know yet that the SAEs will change, so it lists their dependants only in a real run.)
    hooks = (SMOKE_HOOK, "blocks.2.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.2.attn.hook_z")
    # error_saes trains its SAEs with the same train_sae settings
    k_grid = {f"train_sae_k@{SMOKE_HOOK}-{w}-8" for w in (128, 512)}  # sae.ks: [8] at the smoke hook
    assert ran == {f"train_sae@{hook}-{w}" for hook in hooks for w in (128, 512)} | k_grid | {"error_saes@blocks.2.hook_resid_post-512"}, ran


@pytest.mark.slow
def test_sae_training_reads_only_the_rows_reserved_for_it(smoke_acts):
    """Poison every row after the SAE rows with NaN: an SAE that read one would have NaN weights."""
    from pipeline.row_split import RowSplit

    split = RowSplit.of(smoke_acts)
    n_sae = split.sae_train_rows.stop
    assert (n_sae, n_sae) == (int(smoke_acts.attrs["n_sae_rows"]), split.fit_rows.start)
    assert 0 < n_sae < int(smoke_acts.attrs["n_train_rows"])
    poisoned = zarr.create_array(store={}, shape=smoke_acts.shape, chunks=smoke_acts.chunks, dtype="float32")
    values = smoke_acts[:]
    values[n_sae:] = np.nan
    poisoned[:] = values
    cfg = SaeSetConfig(hooks=[SMOKE_HOOK], widths=[64], k=8)
    sae, _ = train_sae(poisoned, n_sae, 64, cfg, TINY_TRAIN, {}, progress=False)
    assert all(torch.isfinite(v).all() for v in sae.state_dict().values())
