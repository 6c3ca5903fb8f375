"""SophiaG against a float64 NumPy reference written from Sophia Alg. 3 / Eq. (5)-(6)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import reference
from sophia_train.optim import SophiaG

SHAPES = [(7,), (5, 3), (2, 3, 4), (1,)]


@pytest.mark.parametrize("use_grad_convention", [False, True])
def test_sophia_matches_float64_reference(use_grad_convention):
    rng = np.random.default_rng(0)
    steps, k, bs, rho, eps, betas = 25, 3, 64, 0.05, 1e-15, (0.965, 0.99)
    params0 = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    # Hessian estimates: squares of random vectors (GNB-like), but some coordinates negative to
    # exercise the sign-momentum fallback (only possible through the mapping form).
    g_hat = [[rng.standard_normal(s) * 0.3 for s in SHAPES] for _ in range(steps)]
    hess = [[g * g for g in row] for row in g_hat]
    if not use_grad_convention:
        hess = [[h - 0.02 for h in row] for row in hess]
    lrs = [1e-2 * (1 - t / steps) + 1e-3 for t in range(steps)]
    wd = [0.2, 0.2, 0.0, 0.0]

    params, opt, _ = reference.drive(
        lambda groups: SophiaG(groups, lr=lrs[0], betas=betas, rho=rho, eps=eps), params0, grads, lrs, decayed=2, weight_decay=0.2,
        k=k, step_kwargs={"bs": bs}, **({"hess_as_grads": g_hat} if use_grad_convention else {"hess": hess}),
    )
    theta, m, h = reference.sophia(params0, grads, hess, lrs, wd, betas=betas, rho=rho, eps=eps, k=k, bs=bs)
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.detach().numpy(), theta[i], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(opt.state[p]["m"].numpy(), m[i], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.state[p]["h"].numpy(), h[i], rtol=1e-12, atol=1e-14)
        assert int(opt.state[p]["step"]) == steps


def test_not_clipped_fraction_is_exact():
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = SophiaG([p], lr=0.1, betas=(0.0, 0.0), rho=1.0, weight_decay=0.0)
    # beta1 = 0: m = g; beta2 = 0: h = h_hat. ratio = |g| / (bs * h): 0.5, 2, 0.25, inf(h=0) -> 2 of 4 below 1.
    opt.update_hessian({p: torch.tensor([1.0, 1.0, 4.0, 0.0], dtype=torch.float64)})
    p.grad = torch.tensor([0.5, -2.0, 1.0, 3.0], dtype=torch.float64)
    opt.step(bs=1)
    assert float(opt.last_stats["not_clipped_frac"]) == 0.5
    torch.testing.assert_close(p.detach(), torch.tensor([-0.05, 0.1, -0.025, -0.1], dtype=torch.float64))


def test_negative_curvature_falls_back_to_sign_momentum():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = SophiaG([p], lr=0.5, betas=(0.0, 0.0), rho=0.05, weight_decay=0.0)
    opt.update_hessian({p: torch.tensor([-1.0, -5.0, -0.1], dtype=torch.float64)})
    p.grad = torch.tensor([1e-9, -3.0, 2.0], dtype=torch.float64)
    opt.step(bs=100)
    torch.testing.assert_close(p.detach(), torch.tensor([-0.5, 0.5, -0.5], dtype=torch.float64))


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    opt_a = SophiaG([a], lr=0.01)
    for _ in range(3):
        a.grad = torch.randn(5)
        opt_a.update_hessian()
        opt_a.step(bs=10)
    b.data.copy_(a.data)
    opt_b = SophiaG([b], lr=0.01)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    g = torch.randn(5)
    a.grad, b.grad = g.clone(), g.clone()
    opt_a.step(bs=10)
    opt_b.step(bs=10)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs", [dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)), dict(rho=-1.0), dict(weight_decay=-0.1), dict(eps=0.0)]
)
def test_invalid_hyperparameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        SophiaG([torch.zeros(2, requires_grad=True)], **kwargs)


def test_official_api_shape():
    """The constructor and call pattern of the official repo's SophiaG work unchanged."""
    model = torch.nn.Linear(4, 2)
    opt = SophiaG(model.parameters(), lr=2e-4, betas=(0.965, 0.99), rho=0.05, weight_decay=0.2)
    model(torch.randn(3, 4)).sum().backward()
    opt.update_hessian()
    opt.step(bs=480 * 1024)
    opt.zero_grad(set_to_none=True)
    assert all(opt.state[p]["h"].abs().sum() > 0 for p in model.parameters())
