"""GNB hook (Sophia Alg. 2): exact match to a hand computation, no side effects, unbiasedness."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from sophia_train.curvature import gnb_estimate, gnb_seed
from sophia_train.model import GPT, GPTConfig


def tiny_gpt(vocab=16, embd=8, layers=1, block=8, seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=layers, n_head=2, n_embd=embd, block_size=block, vocab_size=vocab)).double()


def test_gnb_equals_hand_computed_square_of_sampled_label_gradient():
    model = tiny_gpt()
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1)
    micro = [(3, torch.randint(0, 16, (2, 8), generator=gen)), (4, torch.randint(0, 16, (2, 8), generator=gen))]
    est = gnb_estimate(model, micro, params, seed=11, step=20)

    # By hand: draw each micro-batch's labels with its own seeded generator, average the two mean
    # CE losses, backpropagate into .grad of a copy, square.
    ref = copy.deepcopy(model)
    total = 0.0
    for j, x in micro:
        logits, _ = ref(x, full_logits=True)
        probs = torch.softmax(logits.detach(), dim=-1).reshape(-1, 16)
        g = torch.Generator().manual_seed(gnb_seed(11, 20, j))
        y_hat = torch.multinomial(probs, 1, generator=g).reshape(-1)
        total = total + F.cross_entropy(logits.reshape(-1, 16), y_hat) / len(micro)
    total.backward()
    for p, q in zip(params, ref.parameters()):
        torch.testing.assert_close(est[p], q.grad * q.grad, rtol=1e-10, atol=1e-14)
        assert (est[p] >= 0).all()


def test_gnb_leaves_real_gradient_untouched():
    model = tiny_gpt()
    x = torch.randint(0, 16, (3, 8))
    y = torch.randint(0, 16, (3, 8))
    _, loss = model(x, y)
    loss.backward()
    before = [p.grad.clone() for p in model.parameters()]
    gnb_estimate(model, [(0, x)], list(model.parameters()), seed=0, step=0)
    for p, g in zip(model.parameters(), before):
        assert torch.equal(p.grad, g)


def test_gnb_sampling_is_reproducible_and_seed_dependent():
    model = tiny_gpt()
    params = list(model.parameters())
    x = torch.randint(0, 16, (2, 8))
    a = gnb_estimate(model, [(0, x)], params, seed=5, step=7)
    b = gnb_estimate(model, [(0, x)], params, seed=5, step=7)
    c = gnb_estimate(model, [(0, x)], params, seed=5, step=8)
    assert all(torch.equal(a[p], b[p]) for p in params)
    assert any(not torch.equal(a[p], c[p]) for p in params)


def exact_gauss_newton_diagonal(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """diag( (1/N) sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n ) over the N positions of ``x`` (Eq. 7-8)."""
    names = [n for n, _ in model.named_parameters()]
    base = {n: p.detach() for n, p in model.named_parameters()}

    def logits_of(*flat):
        out, _ = torch.func.functional_call(model, dict(zip(names, flat)), (x,), {"full_logits": True})
        return out.reshape(-1, out.size(-1))

    jac = torch.func.jacrev(logits_of, argnums=tuple(range(len(names))))(*base.values())
    J = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac], dim=2)  # (N, V, P)
    logits = logits_of(*base.values()).detach()
    p = torch.softmax(logits, dim=-1)
    S = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (N, V, V)
    diag = torch.einsum("nvi,nvw,nwi->i", J, S, J) / J.shape[0]
    return diag


def test_gnb_is_unbiased_for_the_gauss_newton_diagonal():
    """E[N * g_hat ⊙ g_hat] equals the exact GN diagonal of the mean loss over N positions (Eq. 10)."""
    model = tiny_gpt(vocab=5, embd=4, layers=1, block=4, seed=3)
    params = list(model.parameters())
    x = torch.tensor([[1, 4, 2]])
    n_pos = x.numel()
    exact = exact_gauss_newton_diagonal(model, x)
    draws = 2000
    samples = torch.stack(
        [torch.cat([e.reshape(-1) for e in gnb_estimate(model, [(0, x)], params, seed=9, step=i).values()]) * n_pos for i in range(draws)]
    )
    mean = samples.mean(0)
    se = samples.std(0) / np.sqrt(draws)
    assert (samples >= 0).all()
    z = (mean - exact).abs() / (se + 1e-30)
    live = exact.abs() > 1e-12
    assert live.sum() > 50
    assert float(z[live].max()) < 5.0, f"max z-score {float(z[live].max()):.2f}"
    assert torch.allclose(mean[~live], exact[~live], atol=1e-10)
    # The estimate is not trivially right: the GN diagonal is not the squared real gradient.
    rel = (mean - exact).norm() / exact.norm()
    assert rel < 0.05


def test_hutchinson_is_unbiased_for_the_hessian_diagonal():
    """E[u ⊙ (H u)] = diag(H) (Sophia Sec. 2.3, Alg. 1), checked against torch.func.hessian."""
    from sophia_train.curvature import hutchinson_estimate

    model = tiny_gpt(vocab=5, embd=4, layers=1, block=4, seed=4)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.tensor([[1, 4, 2, 0]]), torch.tensor([[4, 2, 0, 3]])
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])
    sizes = [p.numel() for p in params]

    def loss_of(flat):
        parts = dict(zip(names, [t.view_as(p) for t, p in zip(flat.split(sizes), params)]))
        return torch.func.functional_call(model, parts, (x, y))[1]

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        exact = torch.func.hessian(loss_of)(flat0).diagonal()
    draws = 3000
    samples = torch.stack(
        [torch.cat([e.reshape(-1) for e in hutchinson_estimate(model, [(x, y)], params, seed=1, step=i).values()]) for i in range(draws)]
    )
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(draws)
    live = exact.abs() > 1e-10
    assert live.sum() > 50 and (samples < 0).any()  # Hutchinson, unlike GNB, can be negative
    z = (mean - exact).abs() / (se + 1e-30)
    assert float(z[live].max()) < 5.0, f"max z-score {float(z[live].max()):.2f}"


def test_hutchinson_averages_micro_batches_like_the_mean_loss():
    """Two micro-batches: the estimate equals u ⊙ (mean of the two HVPs) with one shared probe u."""
    from sophia_train.curvature import hutchinson_estimate, hutchinson_seed

    model = tiny_gpt()
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    mb = [(torch.randint(0, 16, (2, 8), generator=g), torch.randint(0, 16, (2, 8), generator=g)) for _ in range(2)]
    est = hutchinson_estimate(model, mb, params, seed=3, step=5)
    gen = torch.Generator().manual_seed(hutchinson_seed(3, 5))
    u = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        loss = sum(model(x, y)[1] for x, y in mb) / 2
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=u)
    for p, v, h in zip(params, u, hv):
        torch.testing.assert_close(est[p], v * h, rtol=1e-9, atol=1e-12)


def test_trainer_gnb_denominator_is_the_gauss_newton_diagonal_for_any_fraction(tmp_path):
    """The seam trainer -> GNB -> SophiaG: rho * bs * h / rho, averaged over label draws, is the exact
    GN diagonal of the mean loss whatever ``hess_fraction`` is (Alg. 2 line 6's N folded into rho * bs).

    Every sequence of every micro-batch is the same one, so the GN diagonal of the mean loss over any
    subset of them is the same: the answer cannot depend on the fraction. beta2 = 0 makes h the
    latest estimate; the model is restored after every step so all draws see the same parameters.
    A vocabulary of 8 keeps every label probable enough for 500 draws to sample each one often
    (with 256, rare labels make the per-coordinate means heavy-tailed).
    """
    from conftest import compose, tiny_overrides
    from sophia_train.data import write_meta, write_split
    from sophia_train.trainer import Trainer

    data = tmp_path / "vocab8"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        write_split(data / f"{split}.bin", rng.integers(0, 8, 512).astype(np.uint16))
    write_meta(data, 8, "synthetic", {"train": 512, "val": 512}, "random tokens")
    draws = 500
    results = {}
    for fraction in (0.25, 0.5, 1.0):
        cfg = compose(tiny_overrides(
            data, tmp_path / f"f{fraction}", "model.n_layer=1", "model.n_embd=4", "model.block_size=3", "model.pad_vocab_to=1",
            "train.grad_accum=2", "optim.betas=[0.965,0.0]", "optim.hess_interval=1", f"optim.hess_fraction={fraction}",
            "train.warmup_steps=0", f"train.max_steps={draws}",
        ))
        tr = Trainer(cfg)
        x, y = tr.sampler.get("train", 0, 0)
        rep = (x[:1].repeat(x.shape[0], 1), y[:1].repeat(y.shape[0], 1))
        tr.sampler.get = lambda split, step, index: rep
        opt, params = tr.optimizer, tr.params
        frozen = copy.deepcopy(tr.model.state_dict())
        terms = []
        real_step = opt.step

        def step_recording_denominator(*args, bs, **kw):
            row = []
            for group in opt.param_groups:
                hs = [opt.state[p]["h"] for p in group["params"]]
                den = opt._denominators(hs, group, bs)  # what the update divides |m| by
                row += [((d - group["eps"]) / group["rho"]).reshape(-1) for d in den]
            order = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
            by_param = [row[order[id(p)]] for p in params]
            terms.append(torch.cat(by_param).double())
            return real_step(*args, bs=bs, **kw)

        opt.step = step_recording_denominator
        for step in range(draws):
            tr.train_step(step)
            tr.model.load_state_dict(frozen)
        ref = copy.deepcopy(tr.model).double()
        exact = exact_gauss_newton_diagonal(ref, rep[0][:1])
        results[fraction] = (torch.stack(terms), exact)

    for fraction, (samples, exact) in results.items():
        mean, se = samples.mean(0), samples.std(0) / np.sqrt(draws)
        # The whole diagonal's sum (one statistic: the CLT holds well) within 3 standard errors ...
        total, total_se = samples.sum(1).mean(), samples.sum(1).std() / np.sqrt(draws)
        z_total = float((total - exact.sum()).abs() / total_se)
        assert z_total < 3.0, f"hess_fraction={fraction}: trace {float(total):.4g} vs exact {float(exact.sum()):.4g} (z={z_total:.1f})"
        # ... and every coordinate with curvature, as the estimator unbiasedness test does.
        live = exact > 1e-10
        assert live.sum() > 50
        z = (mean - exact).abs() / (se + 1e-30)
        assert float(z[live].max()) < 5.0, f"hess_fraction={fraction}: max z-score {float(z[live].max()):.2f}"
    means = [r[0].sum(1).mean() for r in results.values()]
    assert max(means) / min(means) < 1.1, f"the curvature term depends on hess_fraction: {[float(m) for m in means]}"
