"""Experiment configs (paper settings, ablations, sweeps), the T/2-vs-T report and result plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import compose
from sophia_train.config import ConfigError, accum_per_rank, total_accum
from sophia_train.config.paper import PAPER_PEAK_LR
from sophia_train.metrics import peak_flops_for_name
from sophia_train.plotting import plot_diagnostics, plot_runs
from sophia_train.studies.compare_runs import find_runs, markdown_report, t_half_verdict


@pytest.mark.parametrize("model, optim", [(m, o) for m, row in PAPER_PEAK_LR.items() for o in row])
def test_paper_experiment_uses_table2(model, optim):
    cfg = compose([f"+model={model}", f"optim={optim}", "+experiment=paper"])
    assert cfg.optim.lr == PAPER_PEAK_LR[model][optim]
    t = cfg.train
    assert (t.global_batch, cfg.model.block_size, t.warmup_steps, t.min_lr_ratio, t.grad_clip, t.max_steps) == (480, 1024, 2000, 0.05, 1.0, 100000)
    big = model in ("gpt2_medium", "gpt2_540m", "gpt2_large", "gpt2_xl")
    assert cfg.model.attn_scale_by_layer == (big and optim in ("adamw", "lion"))
    assert cfg.data.name == "openwebtext"


def test_paper_experiment_without_a_table2_entry_says_so():
    with pytest.raises(ConfigError, match="gives no peak LR for optim=lion on model=gpt2_large"):
        compose(["+model=gpt2_large", "optim=lion", "+experiment=paper"])


@pytest.mark.parametrize("gpus, per_rank", [(1, 40), (2, 20), (4, 10), (8, 5)])
def test_global_batch_stays_480_for_any_gpu_count(gpus, per_rank):
    t = compose(["+model=gpt2_small", "optim=adamw", "+experiment=paper"]).train
    assert accum_per_rank(total_accum(t), gpus) == per_rank
    assert per_rank * gpus * t.batch_size == 480


def test_global_batch_indivisible_is_explained():
    t = compose(["+model=gpt2_small", "optim=adamw", "+experiment=paper", "train.batch_size=7"]).train
    with pytest.raises(ConfigError, match="not a multiple of train.batch_size=7"):
        total_accum(t)
    t = compose(["+model=gpt2_small", "optim=adamw", "+experiment=paper"]).train
    with pytest.raises(ConfigError, match="cannot be split evenly over 7 processes"):
        accum_per_rank(total_accum(t), 7)


def hydra_node(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from sophia_train.compose import config_dir, register_configs

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    "experiment, model, sweep",
    [
        ("ablation_hess_interval", "gpt2_30m", {"optim.hess_interval": "1,10,100"}),
        ("ablation_preconditioner", "gpt2_30m", {"optim": "ef_clip,ah_clip,sophia_h,sophia_g"}),
        ("ablation_clipping", "gpt2_30m", {"optim": "clip,normalize,adahessian,gnb_noclip,sophia_g"}),
        ("sensitivity_gamma_beta2", "gpt2_30m", {"optim.rho": "0.005,0.01,0.02"}),
        ("s3_gpt2_medium", "gpt2_medium", {}),
    ],
)
def test_ablation_and_s3_experiments_compose(experiment, model, sweep):
    node = hydra_node([f"+experiment={experiment}"])
    assert node.model.name == model
    params = node.hydra.sweeper.params or {}
    for key, value in sweep.items():
        assert str(params[key]).replace(" ", "") == value
    cfg = compose([f"+experiment={experiment}"])
    assert cfg.train.global_batch == 480
    for opt in sweep.get("optim", "").split(",") if "optim" in sweep else []:
        assert compose([f"+experiment={experiment}", f"optim={opt}"]).optim.name == opt
    if experiment == "s3_gpt2_medium":
        o = cfg.optim
        assert (o.name, o.lr, o.beta, o.p, o.weight_decay, o.nesterov) == ("s3", 3e-3, 0.95, 3.0, 0.01, True)


def test_lr_grid_sweeps_the_papers_list():
    node = hydra_node(["+experiment=lr_grid", "+model=gpt2_small", "optim=adamw"])
    assert str(node.hydra.sweeper.params["optim.lr"]).startswith("6e-4,4e-4,3e-4")


def test_mfu_peaks_by_device_name():
    assert peak_flops_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for_name("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for_name("NVIDIA H200") == 989e12
    assert peak_flops_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for_name("Some Future Accelerator") is None


# --- synthetic run logs -----------------------------------------------------------------------------
def write_run(root, optim, lr, T, seed, curve, estimator=None, secs_per_step=1.0, tokens_per_step=1000, **hparams):
    d = root / f"{optim}-{lr}-{T}-{seed}{''.join(f'-{k}{v}' for k, v in hparams.items())}"
    d.mkdir(parents=True)
    o = {"name": optim, "lr": lr, **hparams}
    if estimator:
        o.update(estimator=estimator, hess_fraction=0.5, hess_interval=10)
    (d / "config.yaml").write_text(yaml.safe_dump({"optim": o, "train": {"max_steps": T, "seed": seed}}))
    rows = [{"kind": "start", "step": 0, "label": f"{optim} {lr}", "tokens_per_step": tokens_per_step}]
    for step, loss in curve:
        rows.append({"kind": "train", "step": step, "loss": loss + 0.05, "elapsed_s": step * secs_per_step,
                     "not_clipped_frac": 0.3, "hessian_norm": 1.0 + step, "grad_clip_rate": 0.1})
        rows.append({"kind": "eval", "step": step, "val_loss": loss, "tokens": step * tokens_per_step, "elapsed_s": step * secs_per_step})
    rows.append({"kind": "end", "step": T, "final_val_loss": curve[-1][1]})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture
def synthetic(tmp_path):
    lin = lambda T, a, b: [(s, a + (b - a) * s / T) for s in range(10, T + 1, 10)]  # noqa: E731
    for seed, off in ((0, 0.0), (1, 0.02)):
        write_run(tmp_path, "adamw", 1e-3, 100, seed, lin(100, 3.0 + off, 2.0 + off))  # baseline final 2.01
        write_run(tmp_path, "adamw", 5e-4, 100, seed, lin(100, 3.0, 2.5))  # a worse LR, must be ignored
        write_run(tmp_path, "sophia_g", 1e-3, 50, seed, lin(50, 3.0, 1.9), estimator="gnb", secs_per_step=1.1)
        write_run(tmp_path, "sophia_g", 1e-3, 100, seed, lin(100, 3.0, 1.8), estimator="gnb", secs_per_step=1.1)
        write_run(tmp_path, "lion", 1e-4, 50, seed, lin(50, 3.0, 2.2))
        write_run(tmp_path, "lion", 1e-4, 100, seed, lin(100, 3.0, 2.0 - off))
    return tmp_path


def test_t_half_verdict_on_synthetic_runs(synthetic):
    runs = find_runs([synthetic])
    base = [r for r in runs if r.optim == "adamw" and r.lr == 1e-3]
    cand = [r for r in runs if r.optim == "sophia_g" and r.max_steps == 50]
    v = t_half_verdict(base, cand)
    assert v["baseline_final"] == pytest.approx(2.01) and v["candidate_final"] == pytest.approx(1.9)
    assert v["reached"] and v["match_from"] == "T/2" and v["seeds_matched"] == "2/2"
    # 3.0 - 1.1 s/50 <= 2.01 first at s = 50 (evals every 10): 45 -> 50 steps of the baseline's 100.
    assert v["steps_ratio"] == pytest.approx(0.5)
    assert v["compute_ratio"] == pytest.approx(0.5 * (1 + 0.05))  # GNB on half the batch every 10 steps
    assert v["wall_ratio"] == pytest.approx(0.5 * 1.1)
    lion = t_half_verdict(base, [r for r in runs if r.optim == "lion" and r.max_steps == 50],
                          fallback=[r for r in runs if r.optim == "lion" and r.max_steps == 100])
    assert not lion["reached"] and lion["match_from"] == "T"


def test_markdown_report_picks_best_lr_and_states_verdicts(synthetic):
    report = markdown_report(find_runs([synthetic]), "adamw", 100)
    assert "| adamw | 0.0005 |  | 100 | 2 | 2.5000 ± 0.0000 |" in report
    assert "against adamw lr=0.001 T=100" in report
    sophia = next(line for line in report.splitlines() if line.startswith("| sophia_g lr=0.001 T=50"))
    assert "| yes | 0.50 | 0.53 | 0.55 | 2/2 (T/2 runs) |" in sophia
    lion = next(line for line in report.splitlines() if line.startswith("| lion lr=0.0001 T=50"))
    assert "| no |" in lion and "(T runs)" in lion


def test_runs_differing_in_rho_are_different_groups(tmp_path):
    """Two rho values at one LR are two configurations (not two seeds of one); the better one is chosen."""
    lin = lambda T, a, b: [(s, a + (b - a) * s / T) for s in range(10, T + 1, 10)]  # noqa: E731
    for seed in (0, 1):
        write_run(tmp_path, "adamw", 1e-3, 100, seed, lin(100, 3.0, 2.0))
        for rho, final in ((0.05, 2.1), (0.1, 1.9)):
            write_run(tmp_path, "sophia_g", 1e-3, 100, seed, lin(100, 3.0, final), estimator="gnb", rho=rho)
            write_run(tmp_path, "sophia_g", 1e-3, 50, seed, lin(50, 3.0, final + 0.2), estimator="gnb", rho=rho)
    report = markdown_report(find_runs([tmp_path]), "adamw", 100)
    assert "| sophia_g | 0.001 | rho=0.05 | 100 | 2 | 2.1000 ± 0.0000 |" in report
    assert "| sophia_g | 0.001 | rho=0.1 | 100 | 2 | 1.9000 ± 0.0000 |" in report
    verdict = next(line for line in report.splitlines() if line.startswith("| sophia_g lr=0.001"))
    assert verdict.startswith("| sophia_g lr=0.001 rho=0.1 T=50 | 2.1000 ± 0.0000 |"), verdict


def test_plots_from_synthetic_logs(synthetic, tmp_path):
    runs = sorted(p for p in synthetic.iterdir() if p.is_dir())
    for x in ("step", "tokens", "time"):
        png = plot_runs(runs[:3], tmp_path / f"curves_{x}.png", x=x, val_only=(x == "time"))
        assert png.stat().st_size > 10_000
    assert plot_diagnostics(runs[:3], tmp_path / "diag.png").stat().st_size > 10_000
    assert not math.isnan(find_runs([synthetic])[0].final_val)


def test_lr_blowup_search_finds_the_largest_stable_lr_and_runs_the_check(byte_data, tmp_path):
    from conftest import tiny_overrides
    from sophia_train.studies.lr_search import search

    overrides = tiny_overrides(byte_data, tmp_path / "search", optim="sgd")
    overrides += ["train.max_steps=12", "train.eval_interval=12", "train.grad_clip=0"]
    result = search(overrides, [1e4, 1e2, 1.0])
    trials = result["trials"]
    assert [t.lr for t in trials] == [1e4, 1e2, 1.0, 1.25]  # the 1.25x check is a run of its own
    assert trials[0].blew_up and trials[1].blew_up and not trials[2].blew_up
    assert trials[3].role == "1.25x check" and result["check_1_25x_blows_up"] == trials[3].blew_up
    assert result["chosen"] == 1.0
    root = tmp_path / "search" / "lr_search"  # under train.out_dir, kept
    for t in trials:
        assert Path(t.folder).parent == root and (Path(t.folder) / "metrics.jsonl").is_file()
    report = (root / "report.md").read_text()
    assert all(f"| {t.lr:g} |" in report for t in trials) and "1.25x check" in report
