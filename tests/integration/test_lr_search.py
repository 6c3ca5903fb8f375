"""The LR blow-up search on real tiny runs: the largest stable LR, then its check run."""

from __future__ import annotations

from pathlib import Path


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
