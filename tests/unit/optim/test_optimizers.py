"""Every optimizer of the suite against a float64 NumPy reference written from its paper's equations.

Each reference runs >= 20 steps over parameters of several shapes, with decoupled weight decay on
the matrices and none on the vectors (the project's grouping rule).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from conftest import compose
from sophia_train.model import GPT, GPTConfig
from sophia_train.optim import AdaHessian, Lion, NormalizedMomentum, SoftSignSGD, SophiaG, SophiaH, build_optimizer

SHAPES = [(6,), (4, 3), (2, 3, 5), (1,)]
WD = [0.1, 0.1, 0.0, 0.0]
STEPS = 24


def make_problem(seed=0):
    rng = np.random.default_rng(seed)
    params0 = [rng.standard_normal(s) for s in SHAPES]
    # heavy-tailed gradients with occasional spikes, to exercise the bounded-update claims
    grads = [[rng.standard_t(3, size=s) * (10.0 if t == 7 else 1.0) for s in SHAPES] for t in range(STEPS)]
    hess = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]  # signed: Hutchinson-like
    lrs = [3e-2 * (1 - t / (2 * STEPS)) for t in range(STEPS)]
    return params0, grads, hess, lrs


def run_torch(opt_factory, params0, grads, lrs, hess=None, k=1, step_kwargs=None):
    params, _, _ = reference.drive(opt_factory, params0, grads, lrs, decayed=2, weight_decay=WD[0], hess=hess, k=k, step_kwargs=step_kwargs)
    return [p.detach().numpy() for p in params]


@pytest.fixture(params=["foreach, chunked", "foreach, whole lists", "per-tensor"])
def foreach(request, monkeypatch):
    """Each implementation of the optimizers that have several: returns their ``foreach`` argument."""
    import sophia_train.optim._common as common

    monkeypatch.setattr(common, "CPU_FOREACH_CHUNK", 7 if request.param == "foreach, chunked" else None)
    return False if request.param == "per-tensor" else None


def assert_all_close(got, want):
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_lion_reference(foreach):
    params0, grads, _, lrs = make_problem(1)
    b1, b2 = 0.95, 0.98
    theta, _ = reference.lion(params0, grads, lrs, WD, betas=(b1, b2))
    got = run_torch(lambda g: Lion(g, lr=lrs[0], betas=(b1, b2), foreach=foreach), params0, grads, lrs)
    assert_all_close(got, theta)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("p_order", [1.0, 2.0, 3.0])
def test_s3_reference(nesterov, p_order, foreach):
    params0, grads, _, lrs = make_problem(2)
    beta, eps = 0.95, 1e-8
    theta, _, _ = reference.s3(params0, grads, lrs, WD, beta=beta, p=p_order, eps=eps, nesterov=nesterov)
    got = run_torch(lambda g: SoftSignSGD(g, lr=lrs[0], beta=beta, p=p_order, eps=eps, nesterov=nesterov, foreach=foreach),
                    params0, grads, lrs)
    assert_all_close(got, theta)


@pytest.mark.parametrize("p_order", [1.0, 2.0, 3.0, 5.0])
def test_s3_theorem2_update_bounded_by_one(p_order):
    """Theorem 2: with one shared beta, |n_t / b_t| <= 1 per coordinate, whatever the gradients."""
    torch.manual_seed(0)
    x = torch.zeros(5000, dtype=torch.float64, requires_grad=True)
    opt = SoftSignSGD([x], lr=1.0, beta=0.9, p=p_order, eps=0.0, weight_decay=0.0)  # Theorem 2 bounds the update without decay
    worst = 0.0
    for t in range(60):
        g = torch.randn(5000, dtype=torch.float64) * torch.exp(3 * torch.randn(5000, dtype=torch.float64))
        g[torch.rand(5000) < 0.2] = 0.0
        g[0] = 1.0  # coordinate 0 never sees a zero gradient first
        before = x.detach().clone()
        x.grad = g
        opt.step()
        step = (x.detach() - before).abs()
        step = step[torch.isfinite(step)]
        worst = max(worst, float(step.max()))
    assert worst <= 1.0 + 1e-12
    assert worst > 0.5  # the bound is approached, not trivially satisfied


@pytest.mark.parametrize("second_moment", [False, True])
@pytest.mark.parametrize("clip", [True, False])
def test_sophia_h_reference(second_moment, clip, foreach):
    """Eq. (6): theta - lr clip(m / max(gamma h, eps), 1); AH+clip uses sqrt of an EMA of h_hat^2."""
    params0, grads, hess, lrs = make_problem(3)
    if not clip:  # unclipped updates need a positive, well-scaled h to stay finite
        hess = [[np.abs(h) + 0.5 for h in row] for row in hess]
    b1, b2, gamma, eps, k = 0.96, 0.99, 0.01, 1e-12, 3
    theta, _, _ = reference.sophia(params0, grads, hess, lrs, WD, betas=(b1, b2), rho=gamma, eps=eps, k=k,
                                   denominator="max_sqrt" if second_moment else "max", clip=clip)
    got = run_torch(
        lambda g: SophiaH(g, lr=lrs[0], betas=(b1, b2), rho=gamma, eps=eps, clip=clip, denominator="max_sqrt" if second_moment else "max",
                          foreach=foreach),
        params0, grads, lrs, hess=hess, k=k,
    )
    assert_all_close(got, theta)


def test_sophia_g_without_clipping_reference(foreach):
    params0, grads, hess, lrs = make_problem(4)
    hess = [[h * h for h in row] for row in hess]
    b1, b2, rho, eps, bs, k = 0.965, 0.99, 0.05, 1e-15, 32, 2
    theta, _, _ = reference.sophia(params0, grads, hess, lrs, WD, betas=(b1, b2), rho=rho, eps=eps, k=k, bs=bs, clip=False)
    got = run_torch(lambda g: SophiaG(g, lr=lrs[0], betas=(b1, b2), rho=rho, eps=eps, clip=False, foreach=foreach), params0, grads, lrs,
                    hess=hess, k=k, step_kwargs={"bs": bs})
    assert_all_close(got, theta)


@pytest.mark.parametrize("k", [1, 3])
def test_adahessian_reference(k):
    """Yao et al.: bias-corrected m and v = EMA of D^2, update m_hat / (sqrt(v_hat)^power + eps)."""
    params0, grads, hess, lrs = make_problem(5)
    b1, b2, eps, power = 0.92, 0.99, 1e-4, 0.5
    theta, _, _ = reference.adahessian(params0, grads, hess, lrs, WD, betas=(b1, b2), eps=eps, power=power, k=k)
    got = run_torch(lambda g: AdaHessian(g, lr=lrs[0], betas=(b1, b2), eps=eps, hessian_power=power), params0, grads, lrs, hess=hess, k=k)
    assert_all_close(got, theta)


def test_normalized_momentum_reference():
    params0, grads, _, lrs = make_problem(6)
    beta, eps = 0.965, 1e-12
    theta, _ = reference.normalized_momentum(params0, grads, lrs, WD, beta=beta, eps=eps)
    got = run_torch(lambda g: NormalizedMomentum(g, lr=lrs[0], beta=beta, eps=eps), params0, grads, lrs)
    assert_all_close(got, theta)


def test_clip_ablation_is_sign_momentum():
    """With no curvature estimate (h = 0) the Sophia update is lr * sign(m): the "Clip" ablation."""
    params0, grads, _, lrs = make_problem(7)
    b1 = 0.965
    theta, m = [p.copy() for p in params0], [np.zeros_like(p) for p in params0]
    for t in range(STEPS):
        for i in range(len(theta)):
            m[i] = b1 * m[i] + (1 - b1) * grads[t][i]
            theta[i] = theta[i] * (1 - lrs[t] * WD[i]) - lrs[t] * np.sign(m[i])
    got = run_torch(lambda g: SophiaG(g, lr=lrs[0], betas=(b1, 0.99)), params0, grads, lrs, step_kwargs={"bs": 480})
    assert_all_close(got, theta)


TORCH_BACKED = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "adadelta": ("Adadelta", {"rho": 0.9}),
    "rmsprop": ("RMSprop", {"alpha": 0.99}),
    "adam": ("Adam", {"betas": (0.9, 0.95)}),
    "adamax": ("Adamax", {"betas": (0.9, 0.95)}),
    "nadam": ("NAdam", {"betas": (0.9, 0.95), "decoupled_weight_decay": True}),
    "radam": ("RAdam", {"betas": (0.9, 0.95), "decoupled_weight_decay": True}),
    "adafactor": ("Adafactor", {}),
}


def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=16))


@pytest.mark.parametrize("name", sorted(TORCH_BACKED))
def test_torch_optim_configs_are_wired(name):
    cls_name, kwargs = TORCH_BACKED[name]
    cfg = compose(["+model=nano", f"optim={name}", "optim.lr=0.0123"])
    opt = build_optimizer(tiny_model(), cfg.optim, torch.device("cpu"))
    assert type(opt) is getattr(torch.optim, cls_name)
    assert opt.param_groups[0]["lr"] == 0.0123
    for key, value in kwargs.items():
        got = opt.param_groups[0][key]
        assert tuple(got) == value if isinstance(value, tuple) else got == value, (key, got, value)
    decay, no_decay = opt.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == cfg.optim.weight_decay


def test_torch_optim_bad_kwargs_and_class_are_clear():
    from sophia_train.config import ConfigError

    cfg = compose(["+model=nano", "optim=sgd", "+optim.kwargs.momentumm=0.9"])
    with pytest.raises(ConfigError, match="do not fit torch.optim.SGD"):
        build_optimizer(tiny_model(), cfg.optim, torch.device("cpu"))
    cfg = compose(["+model=nano", "optim=sgd", "optim.torch_class=Nope"])
    with pytest.raises(ConfigError, match="not an optimizer"):
        build_optimizer(tiny_model(), cfg.optim, torch.device("cpu"))


@pytest.mark.parametrize(
    "name, cls", [("lion", Lion), ("s3", SoftSignSGD), ("adahessian", AdaHessian), ("sophia_h", SophiaH), ("normalize", NormalizedMomentum),
                  ("sophia_g", SophiaG), ("ef_clip", SophiaG), ("clip", SophiaG), ("gnb_noclip", SophiaG), ("ah_clip", SophiaH)]
)
def test_our_optimizer_configs_build_their_class(name, cls):
    cfg = compose(["+model=nano", f"optim={name}"])
    opt = build_optimizer(tiny_model(), cfg.optim, torch.device("cpu"))
    assert type(opt) is cls
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_muon_hybrid_equals_torch_muon_plus_adamw():
    import copy

    from sophia_train.optim import MuonAdamW, split_for_muon

    if not hasattr(torch.optim, "Muon"):
        pytest.skip("this torch has no torch.optim.Muon")
    cfg = compose(["+model=nano", "optim=muon", "optim.lr=0.01"])
    model = tiny_model()
    twin = copy.deepcopy(model)
    opt = build_optimizer(model, cfg.optim, torch.device("cpu"))
    assert type(opt) is MuonAdamW
    hidden, rest = split_for_muon(twin)
    assert all(p.dim() == 2 for p in hidden) and twin.transformer.wte.weight in rest
    ref_muon = torch.optim.Muon(hidden, lr=0.01, weight_decay=0.1, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")
    ref_adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.95))
    x = torch.randint(0, 16, (2, 8))
    for step in range(3):
        for m, opts in ((model, [opt]), (twin, [ref_muon, ref_adamw])):
            _, loss = m(x, x)
            loss.backward()
            for g in opts[0].param_groups:
                g["lr"] = 0.01 / (step + 1)
            for o in opts[1:]:
                for g in o.param_groups:
                    g["lr"] = 0.01 / (step + 1)
            for o in opts:
                o.step()
                o.zero_grad()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)
    sd = copy.deepcopy(opt.state_dict())
    fresh = build_optimizer(copy.deepcopy(model), cfg.optim, torch.device("cpu"))
    fresh.load_state_dict(sd)
    assert len(fresh.state) == len(opt.state) and fresh._muon.state is fresh.state


def test_sophia_h_loads_groups_saved_with_the_old_second_moment_flag():
    """Checkpoints from before ``denominator`` replaced ``second_moment`` still load (and mean the same)."""
    for flag, name in ((True, "max_sqrt"), (False, "max")):
        p = torch.zeros(3, requires_grad=True)
        sd = SophiaH([p], denominator=name).state_dict()
        for group in sd["param_groups"]:
            del group["denominator"]
            group["second_moment"] = flag
        fresh = SophiaH([torch.zeros(3, requires_grad=True)])
        fresh.load_state_dict(sd)
        assert fresh.param_groups[0]["denominator"] == name and "second_moment" not in fresh.param_groups[0]
    with pytest.raises(ValueError, match="official is SophiaG"):
        SophiaH([torch.zeros(2, requires_grad=True)], denominator="official")


@pytest.mark.parametrize("cls, bad", [
    (SophiaG, {"lr": float("nan")}), (SophiaG, {"betas": (0.9, 1.0)}), (SophiaG, {"rho": -0.1}), (SophiaG, {"eps": 0.0}),
    (SophiaH, {"weight_decay": -1.0}), (Lion, {"betas": (-0.1, 0.99)}), (Lion, {"lr": -1e-3}), (SoftSignSGD, {"p": 0.5}),
    (SoftSignSGD, {"beta": 1.0}), (NormalizedMomentum, {"beta": float("nan")}), (AdaHessian, {"hessian_power": 0.0}),
    (AdaHessian, {"hessian_power": 1.5}),
])
def test_constructors_refuse_out_of_range_hyperparameters_by_name(cls, bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=rf"Invalid {name}(\[\d\])?: "):
        cls([torch.nn.Parameter(torch.zeros(2))], **bad)
    cls([torch.nn.Parameter(torch.zeros(2))])  # the defaults are in range
