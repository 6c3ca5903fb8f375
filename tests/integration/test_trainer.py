"""The training loop: resume equivalence, GNB isolation from clipping, metrics and checkpoints."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch

from conftest import compose, tiny_overrides
from sophia_train import checkpoint as ckpt
from sophia_train.curvature import gnb_estimate
from sophia_train.metrics import read_metrics
from sophia_train.trainer import Trainer


def train_losses(out_dir):
    return {r["step"]: r["loss"] for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.parametrize("optim", ["sophia_g", "adamw"])
def test_resumed_run_reproduces_uninterrupted_run(byte_data, tmp_path, optim):
    extra = ["optim.hess_interval=3"] if optim == "sophia_g" else []
    full = Trainer(compose(tiny_overrides(byte_data, tmp_path / "full", *extra, optim=optim)))
    full.fit()
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "split", *extra, "train.stop_after_step=10", optim=optim))).fit()
    assert max(train_losses(tmp_path / "split")) == 10
    resumed = Trainer(compose(tiny_overrides(byte_data, tmp_path / "split", *extra, "train.resume=true", optim=optim)))
    assert resumed.start_step == 10
    resumed.fit()
    a, b = train_losses(tmp_path / "full"), train_losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    sa = ckpt.load_checkpoint(tmp_path / "full" / "ckpt.pt")
    sb = ckpt.load_checkpoint(tmp_path / "split" / "ckpt.pt")
    assert sa["step"] == sb["step"] == 20
    for k in sa["model"]:
        torch.testing.assert_close(sa["model"][k], sb["model"][k], rtol=0, atol=1e-6)


def test_gnb_estimate_is_not_clipped_and_real_gradient_is_undisturbed(byte_data, tmp_path):
    # A clip threshold far below any gradient norm: the real gradient is clipped on every step.
    cfg = compose(tiny_overrides(byte_data, tmp_path, "train.grad_clip=1e-6", "optim.hess_fraction=0.5"))
    trainer = Trainer(cfg)
    model0 = copy.deepcopy(trainer.model)
    n = round(0.5 * cfg.train.batch_size)
    x, y = trainer.sampler.get("train", 0, 0)

    expected_h = gnb_estimate(model0, [(0, x[:n])], list(model0.parameters()), cfg.train.seed, 0)
    gnb_share = n / cfg.train.batch_size  # GNB tokens / step tokens: Alg. 2's N folded into rho * bs
    ref = copy.deepcopy(model0)
    _, loss = ref(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 1e-6)

    trainer.train_step(0)
    beta1, beta2 = cfg.optim.betas
    for p, p0, pr in zip(trainer.model.parameters(), model0.parameters(), ref.parameters()):
        state = trainer.optimizer.state[p]
        torch.testing.assert_close(state["h"], (1 - beta2) * gnb_share * expected_h[p0], rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(state["m"], (1 - beta1) * pr.grad, rtol=1e-5, atol=1e-12)


def test_run_writes_metrics_checkpoint_and_plot(byte_data, tmp_path):
    cfg = compose(tiny_overrides(byte_data, tmp_path, "train.plot=true", "train.log_interval=5"))
    summary = Trainer(cfg).fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    kinds = {r["kind"] for r in rows}
    assert {"start", "train", "eval", "end"} <= kinds
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    for key in ("loss", "lr", "ms_per_step", "tokens_per_s", "grad_clip_rate", "not_clipped_frac", "hessian_norm"):
        assert key in train[-1], key
    assert any("hessian_s" in r for r in train)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 20
    assert summary["final_val_loss"] == evals[-1]["val_loss"]
    assert (tmp_path / "ckpt.pt").is_file() and (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert (tmp_path / "config.yaml").is_file()
    state = ckpt.load_checkpoint(tmp_path / "ckpt.pt")
    assert state["step"] == 20 and state["optim_name"] == "sophia_g"
    assert any("h" in s for s in state["optimizer"]["state"].values())


def test_paper_reference_run_ends_with_the_papers_number_for_its_cell(byte_data, tmp_path, capsys):
    # a nano-sized model labelled gpt2_small: the end line reads the cell by name, the numbers come from the run
    cfg = compose(tiny_overrides(byte_data, tmp_path / "a", "model.name=gpt2_small", "reference=sophia_paper", "train.max_steps=4"))
    summary = Trainer(cfg).fit()
    out = capsys.readouterr().out
    expected = (f"paper: 2.875 at 100K steps, this run: {summary['final_val_loss']:.3f} at step 4, difference "
                f"{summary['final_val_loss'] - 2.875:+.3f} (not comparable: this run stopped at 4 of the paper's 100,000 steps;")
    assert expected in out
    end = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "end"][-1]
    assert end["paper_val_loss"] == 2.875
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "b", "reference=sophia_paper", "train.max_steps=2", optim="lion"))).fit()
    assert "paper: no Fig. 4 result for optim=lion on model=nano" in capsys.readouterr().out
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "c", "train.max_steps=2"))).fit()
    assert "paper:" not in capsys.readouterr().out


def test_auto_threads_reach_torch_and_the_banner(byte_data, tmp_path, capsys, monkeypatch):
    from sophia_train.distributed.threads import usable_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine: every usable core
    before = torch.get_num_threads()
    try:
        Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.threads=auto", "train.max_steps=2")))
        cores = usable_cores()
        assert torch.get_num_threads() == cores
        monkeypatch.setattr(os, "getloadavg", lambda: (float(cores), 0.0, 0.0))  # every core taken: one thread
        tr = Trainer(compose(tiny_overrides(byte_data, tmp_path / "busy", "train.threads=auto", "train.max_steps=2")))
        tr.fit()
        assert torch.get_num_threads() == 1
        assert f"torch CPU threads: 1 (auto: {cores} core" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_learning_rate_follows_schedule_in_the_loop(byte_data, tmp_path):
    from sophia_train.schedule import lr_at

    cfg = compose(tiny_overrides(byte_data, tmp_path, "optim.lr=1e-3", "train.warmup_steps=4"))
    Trainer(cfg).fit()
    for r in read_metrics(tmp_path / "metrics.jsonl"):
        if r["kind"] == "train":
            assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, 1e-3, 4, 20, 0.05))


def test_atomic_checkpoint_survives_crash_between_write_and_rename(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    ckpt.save_checkpoint({"format_version": ckpt.FORMAT_VERSION, "step": 1, "w": torch.ones(3)}, path)

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        ckpt.save_checkpoint({"format_version": ckpt.FORMAT_VERSION, "step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    # The next successful save replaces it.
    ckpt.save_checkpoint({"format_version": ckpt.FORMAT_VERSION, "step": 3, "w": torch.zeros(3)}, path)
    assert ckpt.load_checkpoint(path)["step"] == 3


def test_metrics_after_resume_drop_rows_past_the_checkpoint(byte_data, tmp_path):
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.stop_after_step=10", "train.ckpt_interval=5"))).fit()
    # Pretend the run went on logging past its last checkpoint, then died.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 12, "loss": 123.0}) + "\n")
    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.resume=true"))).fit()
    losses = train_losses(tmp_path)
    assert losses[12] != 123.0 and sorted(losses) == list(range(1, 21))


def test_wandb_logger_offline(byte_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "run", "logger.wandb=true", "train.max_steps=4"))).fit()
    assert list((tmp_path / "run").glob("wandb/offline-run-*")), "no offline wandb run was written"


@pytest.mark.parametrize("optim", ["sophia_h", "ah_clip", "adahessian", "ef_clip"])
def test_hessian_based_optimizers_train_with_fast_attention(byte_data, tmp_path, optim):
    """The normal forward keeps SDPA's default (flash-style) kernels; only the HVP uses the math kernel."""
    cfg = compose(tiny_overrides(byte_data, tmp_path, "optim.hess_interval=3", "optim.hess_fraction=0.5", "train.max_steps=7",
                                 "train.eval_interval=7", "train.log_update_stats=true", optim=optim))
    trainer = Trainer(cfg)
    summary = trainer.fit()
    assert math.isfinite(summary["final_val_loss"])
    buffers = [s.get("h", s.get("v")) for s in trainer.optimizer.state.values()]
    assert all(torch.isfinite(b).all() for b in buffers) and any(b.abs().sum() > 0 for b in buffers)
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert any("hessian_s" in r for r in rows) and all(r["update_max"] > 0 for r in rows)

    # Which SDPA kernel ran, observed: the training forward/backward always through the fused (flash-style)
    # kernel; the math kernel only inside a Hutchinson step's double backward, never elsewhere.
    probe = Trainer(compose(tiny_overrides(byte_data, tmp_path / "probe", "optim.hess_interval=3", "optim.hess_fraction=0.5", optim=optim)))
    hessian_step, plain_step = attention_kernels(probe, 0), attention_kernels(probe, 1)
    fused = [k for k in plain_step if "flash" in k or "efficient" in k]
    assert fused and all(k in hessian_step for k in fused), (hessian_step, plain_step)
    assert not any("math" in k for k in plain_step), plain_step
    double_backward = trainer.estimator.plain_module  # Hutchinson (Sophia-H, AH+clip, AdaHessian); not E-F
    assert any("math" in k for k in hessian_step) == double_backward, hessian_step


def attention_kernels(trainer, step) -> dict[str, int]:
    """The SDPA kernels (aten op names) one training step ran, with their call counts."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.train_step(step)
    return {e.key: e.count for e in prof.key_averages() if "scaled_dot_product" in e.key and e.key != "aten::scaled_dot_product_attention"}


def test_diverging_run_stops_with_a_clear_error(byte_data, tmp_path):
    from sophia_train.config import TrainingDiverged

    cfg = compose(tiny_overrides(byte_data, tmp_path, "optim.lr=1e6", "train.grad_clip=0", optim="sgd"))
    with pytest.raises(TrainingDiverged, match="training diverged at step"):
        Trainer(cfg).fit()


def test_sampling_from_a_trained_run(byte_data, tmp_path):
    from sophia_train.interop.sample import generate_text

    Trainer(compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=3"))).fit()
    text = generate_text(tmp_path, prompt="KING", max_new_tokens=20, seed=1)
    assert text.startswith("KING")  # the prompt is echoed: what follows is what the model generated
    continuation = text[len("KING"):]
    assert continuation, "no tokens were generated"
    assert text == generate_text(tmp_path / "ckpt.pt", prompt="KING", max_new_tokens=20, seed=1)  # seeded
    others = {generate_text(tmp_path, prompt="KING", max_new_tokens=20, seed=s)[len("KING"):] for s in (2, 3, 4)}
    assert others - {continuation}, "the continuation does not depend on the sampling seed: nothing was sampled"


@pytest.mark.parametrize("optim", ["sophia_g", "sophia_h"])
def test_bf16_autocast_path_trains_like_fp32(byte_data, tmp_path, optim):
    """train.dtype=bfloat16 (the GPU default) on CPU: GNB / Hutchinson under autocast, fp32 master weights."""
    extra = ("optim.hess_interval=3", "train.max_steps=12", "train.eval_interval=6")
    fp32 = Trainer(compose(tiny_overrides(byte_data, tmp_path / "fp32", *extra, optim=optim)))
    fp32.fit()
    bf16 = Trainer(compose(tiny_overrides(byte_data, tmp_path / "bf16", *extra, "train.dtype=bfloat16", optim=optim)))
    assert bf16.ptdtype == torch.bfloat16
    bf16.fit()
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    hs = [s["h"] for s in bf16.optimizer.state.values()]
    assert all(h.dtype == torch.float32 and torch.isfinite(h).all() for h in hs) and any(h.abs().sum() > 0 for h in hs)
    a, b = train_losses(tmp_path / "fp32"), train_losses(tmp_path / "bf16")
    assert sorted(a) == sorted(b)
    for step in a:  # bf16 matmuls: ~3 significant digits per op
        assert abs(a[step] - b[step]) < 0.02 * a[step], (step, a[step], b[step])
    assert any(a[step] != b[step] for step in a), "autocast had no effect"


@pytest.mark.slow
def test_compiled_model_trains_like_eager(byte_data, tmp_path):
    """train.compile=true: the normal and the GNB forward run through torch.compile (inductor on CPU)."""
    extra = ("optim.hess_interval=3", "train.max_steps=8", "train.eval_interval=4")
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "eager", *extra))).fit()
    compiled = Trainer(compose(tiny_overrides(byte_data, tmp_path / "compiled", *extra, "train.compile=true")))
    assert compiled.compiled_model is not compiled.model
    compiled.fit()
    a, b = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-4 * a[step], (step, a[step], b[step])


def test_update_stats_cost_nothing_unless_asked(byte_data, tmp_path, monkeypatch):
    """By default no log step copies the parameters (a full model copy at GPT-2 XL size is 6 GB)."""
    cfg = compose(tiny_overrides(byte_data, tmp_path, "train.max_steps=4", optim="adamw"))  # no estimator buffers
    assert cfg.train.log_update_stats is False
    trainer = Trainer(cfg)
    clones = []
    real_clone = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda self, *a, **kw: clones.append(self.numel()) or real_clone(self, *a, **kw))
    trainer.fit()
    n_params = sum(p.numel() for p in trainer.params)
    assert sum(clones) < n_params, "a log step copied the model"
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert rows and not any("update_max" in r for r in rows)
