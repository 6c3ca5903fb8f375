"""compare_runs on synthetic run logs: the T/2-vs-T verdict (Sophia paper Sec. 3.2), the markdown report, plots."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from sophia_train.plotting import plot_diagnostics, plot_runs
from sophia_train.studies.compare_runs import find_runs, markdown_report, t_half_verdict


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
