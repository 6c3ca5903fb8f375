"""The GPU window's one command, rehearsed on CPU: ``DEVICE_DRY_RUN=1 bash bench/device_check.sh OUT`` from a
plain copy of what travels (tracked files plus ``make device-prep``'s folder), in a venv that holds only what
the device image holds (no sophia_train, hydra, omegaconf or datasets), must run every step, bring back at
most 8 plain files and write a summary with every section."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EXPECTED = {"summary.md", "facts.json", "tests.txt", "update_fp32.txt", "step_time.txt", "train.txt", "train_metrics.jsonl",
            "update_bf16.txt"}
STEPS = ("facts", "tests", "update_fp32", "step_time", "train", "update_bf16")


def _plain_checkout(dest: Path) -> Path:
    """The files that travel to the device: tracked and untracked-not-ignored ones, no venv, no installs."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith("results/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_device_check_dry_run_from_a_plain_checkout_in_the_device_image(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to know what travels")
    checkout = _plain_checkout(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOPHIA_DATA_DIR", "VIRTUAL_ENV")}
    prep = subprocess.run([sys.executable, str(checkout / "bench" / "device_prep.py"), "--out", str(checkout / ".device")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-3000:]
    wheels = sorted(p.name.split("-")[0] for p in (checkout / ".device" / "wheels").glob("*.whl"))
    assert wheels == ["antlr4_python3_runtime", "hydra_core", "omegaconf"], wheels
    subprocess.run([sys.executable, str(REPO / "bench" / "device_image_venv.py"), str(tmp_path / "image")], check=True,
                   capture_output=True, timeout=120)
    image_python = tmp_path / "image" / "bin" / "python"
    for absent in ("sophia_train", "hydra", "omegaconf", "datasets"):  # the stage is faithful: none of these there
        probe = subprocess.run([str(image_python), "-c", f"import {absent}"], cwd=tmp_path, capture_output=True, env=env)
        assert probe.returncode != 0, f"{absent} is importable in the device-image venv"

    out = tmp_path / "OUT"
    run_env = {**env, "DEVICE_DRY_RUN": "1", "PYTHON": str(image_python), "HOME": str(tmp_path)}
    run_env.pop("TIKTOKEN_CACHE_DIR", None)  # the carried cache must serve
    done = subprocess.run(["bash", str(checkout / "bench" / "device_check.sh"), str(out)], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert files == EXPECTED, log  # at most 8 come back, plain files at the top of OUT
    summary = (out / "summary.md").read_text()
    for name in STEPS:
        assert f"| {name} | 0 (ok) |" in summary, f"step {name} did not pass:\n{summary}\n{log}"
    assert "DRY RUN" in summary and "passed" in summary and "GNB share sophia_g" in summary
    assert "fp32 1M: fused" in summary and "bf16 1M: fused" in summary and "tokens/s" in summary
