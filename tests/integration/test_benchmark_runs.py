"""The fair optimizer benchmark on real tiny runs: the quick profile end to end (tuning, seeds, fits, table,
plots, two workers, resume), and a run a killed benchmark left half-way."""

from __future__ import annotations

import json
import math

import pytest

from conftest import compose
from sophia_train.studies.benchmark.cli import main
from sophia_train.studies.benchmark.profiles import PROFILES, run_name
from sophia_train.studies.benchmark.runner import Runner
from sophia_train.trainer import Trainer


def test_a_run_a_killed_benchmark_left_half_way_continues_from_its_checkpoint(byte_data, tmp_path):
    profile = PROFILES["quick"]
    size, point, steps = profile.sizes[0], {"lr": 0.02}, 40
    runner = Runner(tmp_path, profile, [f"data.dir={byte_data}", "train.threads=1"], planned=2)
    name = run_name(size, "adamw", point, steps, 0)
    Trainer(compose([*runner.overrides(name, size, "adamw", point, steps, 0), "train.stop_after_step=20"])).fit()
    assert (tmp_path / "runs" / name / "ckpt.pt").exists()
    resumed = runner.run(size, "adamw", point, steps, 0, "test")
    assert "resuming from step 20" in (tmp_path / "runs" / name / "train.log").read_text()
    fresh = Runner(tmp_path / "fresh", profile, [f"data.dir={byte_data}", "train.threads=1"], planned=1)
    again = fresh.run(size, "adamw", point, steps, 0, "test")
    assert resumed.final_val == pytest.approx(again.final_val, abs=1e-5) and resumed.tokens == again.tokens == steps * 8 * 32
    assert not (tmp_path / "runs" / name / "ckpt.pt").exists()  # the metrics are the result


@pytest.mark.slow
def test_quick_profile_end_to_end(byte_data, tmp_path, capsys):
    """Tuning (Phase I + II), 2 seeds, fits, table.md and every PNG; the Phase I points are inside their
    grids; a second invocation trains nothing. The first splits the optimizers over 2 local worker
    processes sharing one results folder (each run lands once); the second runs in this process."""
    out = tmp_path / "quick"
    args = ["--profile", "quick", "--out", str(out), "--data-dir", str(byte_data), "--threads", "1"]
    assert main([*args, "--workers", "2"]) == 0
    first = capsys.readouterr().out
    assert "2 local workers" in first and "2/2 optimizers finished" in first
    names = [json.loads(line)["name"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(names) == len(set(names)) and {n.split("-")[1] for n in names} == {"adamw", "sophia_g"}
    profile = PROFILES["quick"]
    chosen = json.loads((out / "chosen.json").read_text())
    assert set(chosen) == {"adamw", "sophia_g"}
    assert all(len(points) == 9 for points in chosen.values())
    tried = json.loads((out / "tuning.json").read_text())
    for optim, space in profile.spaces.items():
        anchor = next(iter(chosen[optim].values()))
        phase1 = [p for p in tried[optim] if (p["size"], p["steps"]) == (profile.sizes[0].name, profile.sizes[0].steps[1])]
        for key in space:
            values = sorted({p[key] for p in phase1})
            finite = [p for p in phase1 if math.isfinite(p["final_val"])]
            assert values[0] < anchor[key] < values[-1] or len(finite) < len(phase1), (optim, key, values, anchor[key])
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| nano")]
    assert sum("| adamw |" in r for r in rows) == 9 and sum("| sophia_g |" in r for r in rows) == 9
    assert "## AdamW fits" in table and table.count("| nano") >= 3 + 18
    for png in ["speedup_vs_size.png", "sensitivity_adamw.png", "sensitivity_sophia_g.png",
                *(f"loss_vs_budget_{s.name}.png" for s in profile.sizes)]:
        assert (out / png).stat().st_size > 1000, png
    lines = (out / "results.jsonl").read_text().count("\n")
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "runs |" not in again and (out / "results.jsonl").read_text().count("\n") == lines
    assert "Pipeline test only" in table
    assert main([*args, "--report-only"]) == 0 and (out / "table.md").read_text() == table  # rebuilt byte for byte
    capsys.readouterr()
    # a worker killed mid-append leaves a torn last line: reports skip it, the next run repairs it and retrains that run
    results = out / "results.jsonl"
    kept = results.read_text().splitlines()
    results.write_text("".join(f"{x}\n" for x in kept[:-1]) + kept[-1][: len(kept[-1]) // 2])
    assert main([*args, "--report-only"]) == 0
    assert "its last line" in capsys.readouterr().out
    assert main(args) == 0
    assert "is torn" in capsys.readouterr().out
    assert results.read_text().splitlines() != kept and len(results.read_text().splitlines()) == len(kept)
    assert {json.loads(x)["name"] for x in results.read_text().splitlines()} == {json.loads(x)["name"] for x in kept}
    # a damaged line before the last is refused with its number, in one paragraph
    damaged = results.read_text().splitlines()
    damaged[2] = damaged[2][:10]
    results.write_text("".join(f"{x}\n" for x in damaged))
    for extra in ([], ["--report-only"]):
        assert main([*args, *extra]) == 2
        assert f"{results}, line 3, is not a result row" in capsys.readouterr().err
