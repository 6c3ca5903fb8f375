"""SOAP and PSGD Kron from heavyball: our optim= configs give the library's own update, with the papers'
defaults, under the one parameter-grouping rule; they checkpoint and resume; they train from the CLI."""

from __future__ import annotations

import copy
import io
import subprocess

import pytest
import torch

from conftest import PYTHON, REPO, compose, python_env, tiny_overrides
from sophia_train.config import ConfigError, validate
from sophia_train.model import GPT, GPTConfig
from sophia_train.optim import build_optimizer, param_groups

heavyball = pytest.importorskip("heavyball")

# The papers' values, typed here independently of config.py: SOAP (Vyas et al. 2024, Sec. 5: beta1 = beta2
# = shampoo beta = 0.95, preconditioner refreshed every 10 steps; reference code's lr 3e-3, wd 0.01, eps
# 1e-8); PSGD Kron (kron_torch: lr 3e-4, momentum 0.9, preconditioner lr 0.1, no weight decay).
LIBRARY = {
    "soap": (lambda groups: heavyball.SOAP(groups, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8,
                                            weight_decay=0.01, precondition_frequency=10, max_precond_dim=2048), 0.01),
    "kron": (lambda groups: heavyball.PSGDKron(groups, lr=3e-4, betas=(0.9, 0.999), weight_decay=0.0, precond_lr=0.1,
                                                max_size_triangular=8192), 0.0),
}


def _train(model, opt, batches, lrs):
    for i, (x, lr) in enumerate(zip(batches, lrs)):
        for g in opt.param_groups:
            g["lr"] = lr
        _, loss = model(x, x)
        loss.backward()
        torch.manual_seed(1000 + i)  # Kron draws whether to refresh its preconditioner: the same draws for all
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["soap", "kron"])
def test_our_config_runs_the_library_update_with_the_papers_defaults(name):
    """12 steps on identical inputs (a changing LR, as the schedule does; SOAP refreshes its eigenbasis at
    step 10) give bit-identical parameters; a weights_only round trip of the state resumes exactly."""
    make_library, wd = LIBRARY[name]
    torch.manual_seed(0)
    ours_model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64))
    lib_model = copy.deepcopy(ours_model)
    ours = build_optimizer(ours_model, compose(["+model=nano", f"optim={name}"]).optim, torch.device("cpu"))
    lib = make_library(param_groups(lib_model, wd))
    assert type(ours) is type(lib)
    assert [len(g["params"]) for g in ours.param_groups] == [len(g["params"]) for g in lib.param_groups]
    assert [g["weight_decay"] for g in ours.param_groups] == [wd, 0.0]
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 64, (4, 16), generator=gen) for _ in range(12)]
    lrs = [1e-3 * (1 + i % 3) for i in range(12)]
    _train(ours_model, ours, batches[:6], lrs[:6])
    _train(lib_model, lib, batches[:6], lrs[:6])
    for a, b in zip(ours_model.parameters(), lib_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    buf = io.BytesIO()
    torch.save({"model": ours_model.state_dict(), "optim": ours.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # what checkpoint.load_checkpoint does
    resumed_model = GPT(ours_model.config)
    resumed_model.load_state_dict(saved["model"])
    resumed = build_optimizer(resumed_model, compose(["+model=nano", f"optim={name}"]).optim, torch.device("cpu"))
    resumed.load_state_dict(saved["optim"])
    _train(ours_model, ours, batches[6:], lrs[6:])
    _train(lib_model, lib, batches[6:], lrs[6:])
    _train(resumed_model, resumed, batches[6:], lrs[6:])
    for a, b, c in zip(ours_model.parameters(), lib_model.parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(c, a, rtol=0, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(ours_model.parameters(), GPT(ours_model.config).parameters()))


@pytest.mark.parametrize("name", ["soap", "kron"])
def test_soap_and_kron_train_from_the_command_line(byte_data, tmp_path, name):
    args = tiny_overrides(byte_data, tmp_path, "train.max_steps=8", "train.eval_interval=8", model="tiny", optim=name)
    out = subprocess.run([PYTHON, "-m", "sophia_train", *args], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"optim {name} lr" in out.stdout
    vals = [float(line.split("val loss ")[1].split()[0]) for line in out.stdout.splitlines() if "val loss" in line]
    assert vals[-1] < vals[0] - 0.1, vals  # 8 steps of warmup and decay: it learns


def test_soap_under_fsdp_is_refused_with_a_message():
    with pytest.raises(ConfigError, match="optim=soap \\(heavyball\\).*train.parallel=ddp"):
        validate(compose(["+model=nano", "optim=soap", "train.parallel=fsdp"]))
