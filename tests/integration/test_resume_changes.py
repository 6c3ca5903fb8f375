"""An optimizer setting a resume allows (train.resume_allow=[optim.X]) is the setting the resumed run uses.

Every field of every optimizer schema is changed on resume, one at a time: the change must reach the
restored param groups and change the trajectory (or, for what the loop reads from the config, change the
trajectory), or be refused with a message. ``load_state_dict`` alone would restore the saved values.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import compose, tiny_overrides
from sophia_train.checkpoint.resume_changes import FIXED_FIELDS, LOOP_READ_FIELDS
from sophia_train.config import ConfigError, TrainingDiverged
from sophia_train.trainer import Trainer

OPTIMS = ["adamw", "sophia_g", "sophia_h", "adahessian", "lion", "s3", "normalize", "muon", "soap", "kron", "momentum"]
FREE = {"fused", "foreach"}  # implementation choices, free on resume (they compute the same update)
BASE = ("train.max_steps=14", "train.warmup_steps=1", "train.eval_interval=100", "train.log_interval=100")
CURVATURE = ("optim.hess_interval=1",)  # a curvature refresh in every resumed step, so its settings show
NEW_VALUES = {"lr": lambda v: v * 3, "eps": lambda v: v * 1e4 + 1e-3, "weight_decay": lambda v: v * 4 + 0.5,
              "rho": lambda v: v * 8, "hess_interval": lambda v: 2, "hess_fraction": lambda v: 0.75,
              "estimator": lambda v: "empirical_fisher", "clip": lambda v: not v, "nesterov": lambda v: not v,
              "ns_steps": lambda v: 2, "hessian_power": lambda v: 0.5, "p": lambda v: 2.0, "beta": lambda v: 0.5,
              "momentum": lambda v: 0.5, "shampoo_beta": lambda v: 0.5, "precond_lr": lambda v: 0.9,
              "precondition_frequency": lambda v: 2, "betas": lambda v: (0.5, 0.6), "denominator": lambda v: "max_sqrt",
              "max_precond_dim": lambda v: 8, "max_size_triangular": lambda v: 8, "torch_class": lambda v: "RMSprop",
              "kwargs.momentum": lambda v: 0.5}


def _cases():
    for optim in OPTIMS:
        cfg = compose(["+model=nano", f"optim={optim}"]).optim
        for f in dataclasses.fields(cfg):
            if f.name == "kwargs":  # torch.optim's own hyperparameters, one key at a time
                yield from (pytest.param(optim, f"kwargs.{k}", id=f"{optim}-kwargs.{k}") for k in getattr(cfg, f.name))
            elif f.name not in FREE and f.name != "name":
                yield pytest.param(optim, f.name, id=f"{optim}-{f.name}")


def _fmt(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{v}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _params(tr: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in tr.model.parameters()]


@pytest.fixture(scope="module")
def saved_runs(byte_data, tmp_path_factory):
    """Per optimizer: a run stopped at step 3 (its folder is copied for each case) and the plain resume's weights."""
    import shutil

    runs = {}
    root = tmp_path_factory.mktemp("resume_changes")
    for optim in OPTIMS:
        base = root / optim
        extra = (*BASE, *(CURVATURE if optim.startswith("sophia") or optim == "adahessian" else ()))
        Trainer(compose(tiny_overrides(byte_data, base, *extra, "train.stop_after_step=3", optim=optim))).fit()
        plain_dir = root / f"{optim}-plain"
        shutil.copytree(base, plain_dir)
        tr = Trainer(compose(tiny_overrides(byte_data, plain_dir, *extra, "train.resume=true", optim=optim)))
        tr.fit()
        runs[optim] = (base, extra, _params(tr))
    return runs


@pytest.mark.parametrize("optim,field", list(_cases()))
def test_an_allowed_optimizer_change_reaches_the_resumed_run(byte_data, tmp_path, saved_runs, optim, field):
    import shutil

    base, extra, plain = saved_runs[optim]
    folder = tmp_path / "run"
    shutil.copytree(base, folder)
    cfg = compose(tiny_overrides(byte_data, folder, *extra, optim=optim)).optim
    old = cfg.kwargs[field.split(".", 1)[1]] if field.startswith("kwargs.") else getattr(cfg, field)
    new = NEW_VALUES[field](old)
    args = tiny_overrides(byte_data, folder, *extra, f"optim.{field}={_fmt(new)}", "train.resume=true",
                          f"train.resume_allow=[optim.{field}]", optim=optim)
    if optim == "adahessian" and field == "estimator":  # its only estimator: refused like any new run's
        with pytest.raises(ConfigError, match="AdaHessian needs optim.estimator=hutchinson"):
            Trainer(compose(args))
        return
    if field in FIXED_FIELDS:
        with pytest.raises(ConfigError, match=rf"train.resume_allow names optim.{field}, but a resumed run cannot apply it"):
            Trainer(compose(args))
        return
    try:
        tr = Trainer(compose(args))
    except ConfigError as e:  # allowed only for what the optimizer reads once, when built
        assert f"optim.{field}" in str(e) and "only when it is built" in str(e)
        assert field not in LOOP_READ_FIELDS
        return
    if field not in LOOP_READ_FIELDS:
        key = field.split(".")[-1]
        held = [g[key] for g in tr.optimizer.param_groups if key in g]
        if held:  # the schema field has a param-group entry of its name: some group holds the new value
            want = list(new) if isinstance(new, tuple) else new
            assert want in [list(v) if isinstance(v, tuple) else v for v in held], (key, held, new)
    try:
        tr.fit()
    except TrainingDiverged:  # e.g. Sophia-H unclipped: a different trajectory, which is the point
        return
    after = _params(tr)
    assert any(not torch.equal(a, b) for a, b in zip(after, plain)), f"optim.{field} changed nothing in the trajectory"
