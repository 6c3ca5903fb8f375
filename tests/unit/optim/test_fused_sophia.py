"""The fused (Triton, interpreted on CPU) and foreach Sophia paths against the reference and each other."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import reference  # noqa: E402
from conftest import compose, tiny_overrides  # noqa: E402
from sophia_train.metrics import read_metrics  # noqa: E402
from sophia_train.optim import SophiaG  # noqa: E402
from sophia_train.trainer import Trainer  # noqa: E402

# SOPHIA_TEST_DEVICE=cuda runs these tests with the compiled kernels on a GPU (default: the CPU interpreter).
DEVICE = torch.device(os.environ.get("SOPHIA_TEST_DEVICE", "cpu"))
# Odd sizes; one tensor crosses the interpreter's 65536-element block boundary.
SHAPES = [(7,), (131, 3), (65537,), (5, 5, 5), (1,)]
STEPS, K, BS = 22, 3, 96


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    hess = [[(rng.standard_normal(s) * 0.05) ** 2 for s in SHAPES] for _ in range(STEPS)]
    lrs = [2e-2 * (1 - t / (2 * STEPS)) for t in range(STEPS)]
    return p0, grads, hess, lrs


def to_bf16(x):
    return torch.tensor(x).to(torch.bfloat16).double().numpy()


WD = (0.2, 0.2, 0.2, 0.0, 0.0)  # the first three parameters form the decayed group


def sophia_reference(p0, grads, hess, lrs, betas=(0.965, 0.99), rho=0.05, eps=1e-15, store=lambda x: x):
    """Float64 Sophia-G of this file's problems (``store`` rounds as the parameters' dtype would)."""
    return reference.sophia(p0, grads, hess, lrs, WD, betas=betas, rho=rho, eps=eps, k=K, bs=BS, store=store)


def run(p0, grads, hess, lrs, dtype=torch.float32, grad_convention=False, opt_cls=SophiaG, **kw):
    """Drive ``opt_cls`` over this file's problems on DEVICE -> (params, optimizer, not-clipped fractions)."""
    estimate = {"hess_as_grads": [[np.sqrt(h) for h in row] for row in hess]} if grad_convention else {"hess": hess}
    return reference.drive(lambda groups: opt_cls(groups, lr=lrs[0], **kw), p0, grads, lrs, decayed=3, weight_decay=0.2, dtype=dtype,
                           device=DEVICE, k=K, step_kwargs={"bs": BS} if opt_cls.takes_tokens_per_step else None, **estimate)


@pytest.mark.parametrize("grad_convention", [False, True])
def test_fused_kernel_matches_float64_reference_and_unfused(grad_convention):
    p0, grads, hess, lrs = make_data()
    theta, m_ref, h_ref = sophia_reference(p0, grads, hess, lrs)
    fused, opt_f, counts_f = run(p0, grads, hess, lrs, fused=True, grad_convention=grad_convention)
    assert opt_f.fused
    plain, opt_p, counts_p = run(p0, grads, hess, lrs, fused=False, foreach=False, grad_convention=grad_convention)
    assert not opt_p.fused
    for i, (a, b) in enumerate(zip(fused, plain)):
        np.testing.assert_allclose(a.detach().cpu().numpy(), theta[i], rtol=1e-4, atol=5e-5)  # fp32 vs fp64
        np.testing.assert_allclose(opt_f.state[a]["m"].cpu().numpy(), m_ref[i], rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(opt_f.state[a]["h"].cpu().numpy(), h_ref[i], rtol=2e-5, atol=1e-12)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # fp32 rounding, 22 steps
    for cf, cp in zip(counts_f, counts_p):
        assert abs(float(cf) - float(cp)) * sum(int(np.prod(s)) for s in SHAPES) <= 2  # borderline ties only


def test_fused_not_clipped_count_is_exact():
    """The count the kernel returns equals the number of ratio < 1 recomputed from its own m and h."""
    p0, grads, hess, lrs = make_data(1)
    params, opt, counts = run(p0, grads, hess, lrs, fused=True)
    m = np.concatenate([opt.state[p]["m"].cpu().numpy().ravel() for p in params])
    h = np.concatenate([opt.state[p]["h"].cpu().numpy().ravel() for p in params])
    denom = np.float32(0.05 * BS) * np.maximum(h, np.float32(0)) + np.float32(1e-15)
    expected = int((np.abs(m) / denom < 1).sum())
    assert round(float(counts[-1]) * m.size) == expected
    assert 0 < expected < m.size


def test_fused_bf16_params_keep_fp32_state():
    p0, grads, hess, lrs = make_data(2)
    p0 = [to_bf16(p) for p in p0]
    grads = [[to_bf16(g) for g in row] for row in grads]  # what a bf16 model's gradients hold
    theta, m_ref, _ = sophia_reference(p0, grads, hess, lrs, store=to_bf16)
    params, opt, _ = run(p0, grads, hess, lrs, dtype=torch.bfloat16, fused=True)
    mismatched = 0
    for i, p in enumerate(params):
        assert p.dtype == torch.bfloat16 and opt.state[p]["m"].dtype == torch.float32
        np.testing.assert_allclose(opt.state[p]["m"].cpu().numpy(), m_ref[i], rtol=1e-4, atol=1e-6)
        got = p.detach().double().cpu().numpy()
        # one bf16 rounding per step on both sides: equal but for rare ties (1 ulp = 2^-7 relative)
        mismatched += int((np.abs(got - theta[i]) > 1e-2 * np.abs(theta[i]) + 1e-6).sum())
    assert mismatched <= 5


def test_foreach_matches_per_tensor_to_rounding():
    p0, grads, hess, lrs = make_data(3)
    a, _, ca = run(p0, grads, hess, lrs, fused=False, foreach=True)
    b, _, cb = run(p0, grads, hess, lrs, fused=False, foreach=False)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert [float(c) for c in ca] == [float(c) for c in cb]


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the chunking and the foreach default are the CPU's")
@pytest.mark.parametrize("limit", [1, 400, None])
def test_chunked_foreach_matches_per_tensor(monkeypatch, limit):
    """CPU foreach runs in chunks of CPU_FOREACH_CHUNK elements; any chunking gives the same update."""
    import sophia_train.optim._common as common
    import sophia_train.optim.sophia as sophia

    calls = []
    original = sophia.SophiaG._update_foreach
    monkeypatch.setattr(common, "CPU_FOREACH_CHUNK", limit)
    monkeypatch.setattr(sophia.SophiaG, "_update_foreach", lambda self, g, p, *a, **kw: calls.append(len(p)) or original(self, g, p, *a, **kw))
    p0, grads, hess, lrs = make_data(4)
    a, opt, ca = run(p0, grads, hess, lrs)  # defaults: fused=None, foreach=None
    b, _, cb = run(p0, grads, hess, lrs, fused=False, foreach=False)
    assert not opt.fused and calls, "on CPU the default is the foreach path"
    per_step = {1: [1, 1, 1, 1, 1], 400: [2, 1, 2], None: [3, 2]}[limit]  # groups: 3 + 2 tensors
    assert calls[: len(per_step)] == per_step
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert [float(c) for c in ca] == [float(c) for c in cb]


def test_numel_chunks_bounds_each_chunk():
    from sophia_train.optim._common import numel_chunks

    ts = [torch.empty(n) for n in (3, 4, 10, 1, 1, 2)]
    assert numel_chunks(ts, None) == [(0, 6)]
    assert numel_chunks(ts, 7) == [(0, 2), (2, 3), (3, 6)]
    assert numel_chunks(ts, 1) == [(i, i + 1) for i in range(6)]
    assert numel_chunks([], 7) == [] and numel_chunks([], None) == []


def test_fused_keeps_params_and_grads_in_flat_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3)).to(DEVICE)
    opt = SophiaG(model.parameters(), lr=1e-2, fused=True)
    (_, fg), = opt._flat
    lo, hi = fg.param_buf.data_ptr(), fg.param_buf.data_ptr() + fg.param_buf.numel() * 4
    for _ in range(2):
        model(torch.randn(4, 5, device=DEVICE)).pow(2).sum().backward()
        for p in model.parameters():
            assert lo <= p.data_ptr() < hi and p.grad.data_ptr() - fg.grad_buf.data_ptr() == p.data_ptr() - lo
        assert fg.grad_buf.abs().sum() > 0
        opt.step(bs=10)
        opt.zero_grad()
        assert fg.grad_buf.abs().sum() == 0 and all(p.grad is not None for p in model.parameters())
    sd = opt.state_dict()
    assert all(v["m"].untyped_storage().nbytes() == v["m"].numel() * 4 for v in sd["state"].values())
    fresh = SophiaG(copy.deepcopy(model).parameters(), lr=1e-2, fused=True)
    fresh.load_state_dict(sd)
    for p, q in zip(opt._flat[0][1].params, fresh._flat[0][1].params):
        assert torch.equal(opt.state[p]["h"], fresh.state[q]["h"]) and torch.equal(opt.state[p]["m"], fresh.state[q]["m"])


@pytest.mark.parametrize("optim", ["sophia_g", "sophia_h", "ah_clip"])
def test_fused_path_in_the_trainer_matches_foreach_and_resumes(byte_data, tmp_path, optim):
    def losses(d):
        return [r["loss"] for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "train"]

    extra = ("optim.hess_interval=3", "train.max_steps=12", f"train.device={DEVICE.type}", "train.dtype=float32")
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "foreach", *extra, "optim.fused=false", optim=optim))).fit()
    Trainer(compose(tiny_overrides(byte_data, tmp_path / "fused", *extra, "optim.fused=true", "train.stop_after_step=6", optim=optim))).fit()
    tr = Trainer(compose(tiny_overrides(byte_data, tmp_path / "fused", *extra, "optim.fused=true", "train.resume=true", optim=optim)))
    assert tr.optimizer.fused and tr.start_step == 6 and tr.cfg.optim.name == optim
    tr.fit()
    a, b = losses(tmp_path / "foreach"), losses(tmp_path / "fused")
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def run_simple(opt_cls, p0, grads, lrs, dtype=torch.float32, **kw):
    params, opt, _ = reference.drive(lambda groups: opt_cls(groups, lr=lrs[0], **kw), p0, grads, lrs, decayed=3, weight_decay=0.2,
                                     dtype=dtype, device=DEVICE)
    return params, opt


@pytest.mark.parametrize("name", ["lion", "s3", "s3_plain"])
def test_fused_lion_and_s3_match_their_per_tensor_paths(name):
    from sophia_train.optim import Lion, SoftSignSGD

    cls, kw = {"lion": (Lion, {}), "s3": (SoftSignSGD, {"p": 3.0}), "s3_plain": (SoftSignSGD, {"p": 2.0, "nesterov": False})}[name]
    p0, grads, _, lrs = make_data(4)
    grads[5][2][:100] = 0.0  # coordinates with zero gradient: |g|^p and its root must give 0, not NaN
    fused, opt_f = run_simple(cls, p0, grads, lrs, fused=True, **kw)
    plain, opt_p = run_simple(cls, p0, grads, lrs, fused=False, **kw)
    assert opt_f.fused and not opt_p.fused
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        for key in opt_p.state[b]:
            torch.testing.assert_close(opt_f.state[a][key], opt_p.state[b][key], rtol=1e-4, atol=1e-6)
    sd = copy.deepcopy(opt_f.state_dict())
    fresh_params = [p.detach().clone().requires_grad_(True) for p in fused]
    fresh = cls([{"params": fresh_params[:3], "weight_decay": 0.2}, {"params": fresh_params[3:], "weight_decay": 0.0}], lr=lrs[0], fused=True, **kw)
    fresh.load_state_dict(sd)
    assert all(torch.equal(fresh.state[q]["m"], opt_f.state[p]["m"]) for p, q in zip(fused, fresh_params))


@pytest.mark.parametrize("second_moment, clip", [(False, True), (True, True), (False, False)])
def test_fused_sophia_h_matches_eq6_reference_and_unfused(second_moment, clip):
    """Sophia-H through the same kernel: theta - lr clip(m / max(gamma h, eps), 1), signed Hutchinson-like h."""
    from sophia_train.optim import SophiaH

    p0, grads, _, lrs = make_data(5)
    rng = np.random.default_rng(6)
    hess = [[rng.standard_normal(s) * 0.5 + (1.0 if not clip else 0.0) for s in SHAPES] for _ in range(STEPS)]
    b1, b2, eps, wd = 0.96, 0.99, 0.02, (0.2, 0.2, 0.2, 0.0, 0.0)  # eps large enough to tell max(gamma h, eps) from gamma h + eps
    gamma = 0.2 if second_moment else 20.0  # a mix of clipped and unclipped coordinates
    theta, _, h = reference.sophia(p0, grads, hess, lrs, wd, betas=(b1, b2), rho=gamma, eps=eps, k=K,
                                   denominator="max_sqrt" if second_moment else "max", clip=clip)

    kw = dict(opt_cls=SophiaH, betas=(b1, b2), rho=gamma, eps=eps, clip=clip, denominator="max_sqrt" if second_moment else "max")
    fused, opt_f, fracs_f = run(p0, grads, hess, lrs, fused=True, **kw)
    plain, _, fracs_p = run(p0, grads, hess, lrs, fused=False, foreach=False, **kw)
    fracs_f, fracs_p = [float(c) for c in fracs_f], [float(c) for c in fracs_p]
    assert opt_f.fused
    for i, (a, b) in enumerate(zip(fused, plain)):
        np.testing.assert_allclose(a.detach().cpu().numpy(), theta[i], rtol=1e-4, atol=5e-5)
        np.testing.assert_allclose(opt_f.state[a]["h"].cpu().numpy(), h[i], rtol=2e-5, atol=1e-8)  # fp32 sums of signed terms
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    n = sum(int(np.prod(s)) for s in SHAPES)
    assert all(abs(x - y) * n <= 2 for x, y in zip(fracs_f, fracs_p))
    if clip:
        assert 0.05 < fracs_f[-1] < 0.95, fracs_f  # a real mix of clipped and unclipped coordinates


def test_the_implementation_in_use_is_named():
    from sophia_train.optim import Lion, implementation

    params = [torch.nn.Parameter(torch.zeros(3, device=DEVICE))]
    assert implementation(SophiaG(params, fused=True)) == "fused triton"
    assert implementation(SophiaG(params)) == ("foreach" if DEVICE.type == "cpu" else "fused triton")
    assert implementation(Lion(params, fused=False, foreach=False)) == "per-tensor"
    # fused is left to the device: on CUDA the kernel wins over foreach=False (the old test assumed a CPU)
    assert implementation(Lion(params, foreach=False)) == ("per-tensor" if DEVICE.type == "cpu" else "fused triton")
    assert implementation(torch.optim.AdamW(params, foreach=True)) == "foreach"
    assert implementation(torch.optim.SGD(params)) == "torch default"


def test_flat_layout_is_aligned_and_its_padding_stays_zero():
    """Offsets and lengths are multiples of ALIGN (so the GPU JIT vectorizes); padding never changes."""
    from sophia_train.optim.flat import ALIGN

    p0, grads, hess, lrs = make_data(7)
    params, opt, counts = run(p0, grads, hess, lrs, fused=True)
    for _, fg in opt._flat:
        assert fg.param_buf.numel() % ALIGN == 0 and all(o % ALIGN == 0 for o, _ in fg.offsets)
        covered = torch.zeros(fg.param_buf.numel(), dtype=torch.bool, device=DEVICE)
        for o, n in fg.offsets:
            covered[o : o + n] = True
        assert int((~covered).sum()) == fg.padding > 0
        for buf in (fg.param_buf, fg.grad_buf, *fg.state.values()):
            assert torch.all(buf[~covered] == 0)
    assert 0 < float(counts[-1]) < 1  # the padding is not counted as "not clipped"


@pytest.mark.parametrize("name", ["sophia_g", "lion", "s3"])
def test_buffers_longer_than_one_launch_are_sliced_exactly(monkeypatch, name):
    """Kernels index with 32-bit offsets; a buffer past MAX_LAUNCH_ELEMENTS runs as several launches."""
    import sophia_train_kernels.sign_methods as sign_kernels
    import sophia_train_kernels.sophia as kernels
    from sophia_train.optim import Lion, SoftSignSGD

    cls = {"sophia_g": SophiaG, "lion": Lion, "s3": SoftSignSGD}[name]
    p0, grads, hess, lrs = make_data(8)

    def go():
        if cls is SophiaG:
            params, opt, counts = run(p0, grads, hess, lrs, fused=True)
        else:
            (params, opt), counts = run_simple(cls, p0, grads, lrs, fused=True), []
        return params, opt, counts

    whole, opt_w, counts_w = go()
    monkeypatch.setattr(kernels, "MAX_LAUNCH_ELEMENTS", 65536)  # group 0 (66,048 padded elements) -> 2 launches
    launches = []
    original = kernels.launch
    for module in (kernels, sign_kernels):
        monkeypatch.setattr(module, "launch", lambda k, bufs, *a, **kw: launches.append(bufs[0].numel()) or original(k, bufs, *a, **kw))
    sliced, opt_s, counts_s = go()
    assert launches and max(launches) > 65536
    for a, b in zip(whole, sliced):
        assert torch.equal(a, b)
        for key in opt_w.state[a]:
            assert torch.equal(opt_w.state[a][key], opt_s.state[b][key])
    assert [float(c) for c in counts_w] == [float(c) for c in counts_s]


@pytest.mark.parametrize("direction", ["fused->foreach", "foreach->fused"])
def test_optimizer_state_moves_between_fused_and_unfused(direction):
    """A checkpoint of one path resumes on the other (a GPU run continued on CPU, or the reverse)."""
    p0, grads, hess, lrs = make_data(9)
    first_fused = direction.startswith("fused")
    a, opt_a, _ = run(p0, grads, hess, lrs, fused=first_fused)
    b_params = [x.detach().clone().requires_grad_(True) for x in a]
    opt_b = SophiaG([{"params": b_params[:3], "weight_decay": 0.2}, {"params": b_params[3:], "weight_decay": 0.0}],
                    lr=lrs[0], fused=not first_fused)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert opt_b.fused is (not first_fused)
    for x, y in zip(a, b_params):
        for key in ("m", "h", "step"):
            torch.testing.assert_close(opt_b.state[y][key], opt_a.state[x][key], rtol=0, atol=0)
    for opt, params in ((opt_a, a), (opt_b, b_params)):  # one more identical step on both
        for p, g in zip(params, grads[0]):
            p.grad = torch.tensor(g, dtype=torch.float32, device=DEVICE) if p.grad is None else p.grad.copy_(torch.tensor(g))
        opt.step(bs=BS)
    for x, y in zip(a, b_params):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_gpu_block_size_gives_the_same_result_in_the_interpreter(monkeypatch):
    """The GPU launch shape (1024-element blocks, many programs, one atomic count each) changes nothing."""
    import sophia_train_kernels.sophia as kernels

    p0, grads, hess, lrs = make_data(10)
    big, opt_big, counts_big = run(p0, grads, hess, lrs, fused=True)
    monkeypatch.setattr(kernels, "BLOCK_SIZE", 1024)
    small, opt_small, counts_small = run(p0, grads, hess, lrs, fused=True)
    for a, b in zip(big, small):
        assert torch.equal(a, b) and torch.equal(opt_big.state[a]["m"], opt_small.state[b]["m"])
    assert [float(c) for c in counts_big] == [float(c) for c in counts_small]


class PartlyUsed(torch.nn.Module):
    """``unused`` never gets a gradient; ``b`` only on even steps. ``unused`` sits between decayed tensors,
    so the fused path's buffers split into several stretches."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 7)
        self.unused = torch.nn.Parameter(torch.randn(3, 4))
        self.b = torch.nn.Linear(7, 3)

    def forward(self, x, use_b: bool):
        y = torch.tanh(self.a(x))
        return self.b(y) if use_b else y


@pytest.mark.parametrize("name", ["sophia_g", "sophia_h", "lion", "s3"])
def test_every_path_leaves_parameters_without_gradient_alone(name):
    """Per-tensor, foreach and fused agree when some parameters have no gradient in some steps and the
    curvature estimate covers only some parameters: those get no weight decay, no moment update, no h decay."""
    from sophia_train.optim import Lion, SoftSignSGD, SophiaH, param_groups

    cls = {"sophia_g": SophiaG, "sophia_h": SophiaH, "lion": Lion, "s3": SoftSignSGD}[name]

    def train(**impl):
        torch.manual_seed(0)
        model = PartlyUsed().to(DEVICE)
        opt = cls(param_groups(model, 0.2), lr=1e-2, **impl)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        gen = torch.Generator().manual_seed(1)
        stats = []
        for t in range(6):
            use_b = t % 2 == 0
            model(torch.randn(4, 5, generator=gen).to(DEVICE), use_b).pow(2).mean().backward()
            if hasattr(opt, "update_hessian") and t % 3 == 0:  # b.weight's estimate only at t = 0: its h must not decay at t = 3
                covered = (model.a.weight, model.a.bias) + ((model.b.weight,) if t == 0 else ())
                opt.update_hessian({p: torch.rand(p.shape, generator=gen).to(DEVICE) * 1e-2 for p in covered})
            opt.step(bs=8) if getattr(opt, "takes_tokens_per_step", False) else opt.step()
            if "not_clipped_frac" in getattr(opt, "last_stats", {}):
                stats.append(float(opt.last_stats["not_clipped_frac"]))
            opt.zero_grad(set_to_none=True)
        return model, opt, start, stats

    results = {label: train(**kw) for label, kw in
               {"per-tensor": dict(fused=False, foreach=False), "foreach": dict(fused=False), "fused": dict(fused=True)}.items()}
    assert results["fused"][1].fused
    for label, (model, opt, start, stats) in results.items():
        assert torch.equal(model.unused.detach(), start["unused"]), f"{label} moved a parameter that never had a gradient"
        st = opt.state.get(model.unused, {})
        assert all(float(v.abs().max()) == 0 for k, v in st.items() if k != "step"), f"{label}: state of an unused parameter"
    ref_model, ref_opt, _, ref_stats = results["per-tensor"]
    for label in ("foreach", "fused"):
        model, opt, _, stats = results[label]
        for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{label} vs per-tensor: {n}")
            for key, v in ref_opt.state.get(q, {}).items():
                if key != "step":
                    torch.testing.assert_close(opt.state[p][key], v, rtol=1e-5, atol=1e-7, msg=f"{label} vs per-tensor: {key} of {n}")
        assert stats == pytest.approx(ref_stats)
    if name.startswith("sophia"):  # b.bias never had an estimate: its h is exactly zero on every path
        for label, (model, opt, _, _) in results.items():
            assert float(opt.state[model.b.bias]["h"].abs().max()) == 0, label
