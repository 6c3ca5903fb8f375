"""``pip install .`` (not editable) into a fresh virtualenv gives working ``python -m sophia_train`` and
``sophia-train`` commands from any folder: the configs travel inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "sophia_train", "kernels", "configs")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


@pytest.mark.slow
def test_non_editable_install_composes_configs_from_any_folder(tmp_path):
    src = tmp_path / "src"  # build from a copy: the checkout gets no build/ or egg-info
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
    for cache in src.rglob("__pycache__"):
        shutil.rmtree(cache)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(wheels)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("sophia_train-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = _venv_python(venv)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, hydra, ...) come from this environment, read-only, after the venv's own packages
    Path(site, "test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOPHIA_CONFIG_DIR")}
    where = subprocess.run([py, "-c", "import sophia_train, sophia_train.compose as c; print(sophia_train.__file__); print(c.config_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    module_file, configs = where.stdout.split()
    assert Path(module_file).is_relative_to(venv) and Path(configs).is_relative_to(venv), where.stdout

    for cmd in ([str(py), "-m", "sophia_train"], [str(venv / "bin" / "sophia-train")]):
        out = subprocess.run([*cmd, "+model=tiny", "optim=adamw", "--cfg", "job"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "name: tiny" in out.stdout and "name: adamw" in out.stdout, out.stdout[:2000]
    bare = subprocess.run([str(venv / "bin" / "sophia-train")], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 0 and "models: " in bare.stdout and "gpt2_small" in bare.stdout, bare.stdout + bare.stderr[-2000:]
    for tool in ("sophia-prepare", "sophia-sample", "sophia-export-hf", "sophia-evaluate", "sophia-inspect", "sophia-convert-ckpt"):
        out = subprocess.run([str(venv / "bin" / tool), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "usage:" in out.stdout, (tool, out.stderr[-2000:])
    # hints name what works for an installed package: its console scripts, and pip commands that need no PyPI sophia_train
    missing = subprocess.run([str(venv / "bin" / "sophia-train"), "+model=tiny", "optim=adamw", "train.threads=1"], cwd=elsewhere,
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "`sophia-prepare corpus`" in missing.stderr and "scripts/" not in missing.stderr, missing.stderr
    hint = subprocess.run([py, "-c", "from sophia_train.hints import install_command as i; print(i('hf', '?')); print(i('peers', '?'))"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert hint.stdout.splitlines() == ["pip install 'transformers>=4.40' 'safetensors>=0.4'", "pip install 'heavyball>=3.2'"], hint
