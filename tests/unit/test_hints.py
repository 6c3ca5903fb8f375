"""Hints phrased for where the user is: checkout scripts and ``pip install -e`` there, console scripts and a
pip command that works for an installed package elsewhere."""

from __future__ import annotations

from conftest import REPO
from sophia_train import hints


def test_in_the_checkout(monkeypatch):
    monkeypatch.chdir(REPO)
    assert hints.in_checkout()
    assert hints.script_command("prepare_data.py", "corpus") == "python scripts/prepare_data.py corpus"
    assert hints.install_command("hf", "transformers") == "pip install -e '.[hf]'"


def test_in_the_checkout_from_another_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert hints.script_command("sample.py", "runs/demo") == f"python {REPO / 'scripts' / 'sample.py'} runs/demo"
    assert hints.install_command("eval", "lm-eval") == f"pip install -e '{REPO}[eval]'"


def test_installed_package_gets_console_scripts_and_a_reachable_pip_command(monkeypatch, tmp_path):
    not_a_checkout = tmp_path / "site-packages"
    not_a_checkout.mkdir()
    assert hints.script_command("prepare_data.py", "corpus", root=not_a_checkout) == "sophia-prepare corpus"
    assert hints.script_command("inspect_ckpt.py", root=not_a_checkout) == "sophia-inspect"
    source = tmp_path / "src"
    source.mkdir()
    monkeypatch.setattr(hints, "_install_origin", lambda: ("dir", str(source)))  # pip install /path/to/checkout
    assert hints.install_command("hf", "x", root=not_a_checkout) == f"pip install '{source}[hf]'"
    monkeypatch.setattr(hints, "_install_origin", lambda: ("archive", "file:///w/sophia_train-0.1-py3-none-any.whl"))
    monkeypatch.setattr(hints, "extra_requirements", lambda extra: {"hf": ["transformers>=4.40", "safetensors>=0.4"]}[extra])
    assert hints.install_command("hf", "x", root=not_a_checkout) == "pip install 'transformers>=4.40' 'safetensors>=0.4'"
    monkeypatch.setattr(hints, "extra_requirements", lambda extra: [])
    assert hints.install_command("peers", "heavyball", root=not_a_checkout) == "pip install heavyball"


def test_extras_read_from_the_installed_metadata():
    assert "heavyball>=3.2" in hints.extra_requirements("peers")
    assert {"transformers>=4.40", "safetensors>=0.4"} <= set(hints.extra_requirements("hf"))
