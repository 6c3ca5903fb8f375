"""Allowed optimizer changes on resume (``train.resume_allow=[optim.X]``) reach the optimizer.

``optimizer.load_state_dict`` restores the saved param groups, hyperparameters included, so a resumed
run would keep the checkpoint's rho, betas or weight decay whatever the config now says. After the
restore, ``apply_optimizer_changes`` builds the optimizer twice without state, once from the
checkpoint's optimizer config and once from today's, and copies into the restored groups exactly the
group entries that differ between those two builds: the changed hyperparameters, nothing that the
optimizer counts as it runs (heavyball keeps step counters in its groups).

A changed field must take effect somewhere: in the param groups, or in the loop, which reads
``LOOP_READ_FIELDS`` from the config at every step. A field that does neither (it fixes the shape of the
optimizer state, or the optimizer reads it only in its constructor) is refused with a message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn

from sophia_train.errors import ConfigError
from sophia_train.optim import build_optimizer

#: Optimizer fields the training loop reads from the config itself, so a resumed run applies them as is:
#: the peak LR (through the schedule, which sets every group's LR each step) and the curvature hook's settings.
LOOP_READ_FIELDS = ("lr", "hess_interval", "hess_fraction", "estimator")

#: Fields that choose another update rule or fix the shapes of the optimizer state: never changed on resume.
FIXED_FIELDS = ("name", "denominator", "torch_class", "max_precond_dim", "max_size_triangular")


def saved_optim_config(now: Any, saved: dict[str, Any]) -> Any:
    """The checkpoint's optimizer config as today's schema class (fields added since keep today's default)."""
    fields = {f.name for f in dataclasses.fields(now)}
    values = {k: v for k, v in saved.items() if k in fields}
    for k, v in values.items():
        if isinstance(getattr(now, k), tuple) and isinstance(v, list):
            values[k] = tuple(v)
    return dataclasses.replace(now, **values)


def _group_values(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def _same(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and bool((a == b).all())
    return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)


def refuse_fixed_fields(changes: dict[str, tuple[Any, Any]]) -> None:
    """Refuse a resume that changes one of ``FIXED_FIELDS`` (before the checkpoint is loaded into anything)."""
    fixed = sorted(k.split(".", 1)[1] for k in changes if k.startswith("optim.") and k.split(".")[1] in FIXED_FIELDS)
    if fixed:
        raise ConfigError(_refusal(fixed, "a different value picks another update rule or changes the shape of the optimizer state"))


def _with_field(base: Any, field: str, now: Any) -> Any:
    """``base`` with one (dotted: ``kwargs.momentum``) field taken from ``now``."""
    top, _, sub = field.partition(".")
    if not sub:
        return dataclasses.replace(base, **{top: getattr(now, top)})
    merged = dict(getattr(base, top))
    if sub in getattr(now, top):
        merged[sub] = getattr(now, top)[sub]
    else:
        merged.pop(sub, None)
    return dataclasses.replace(base, **{top: merged})


def _differing_keys(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """(group index, key) of the param-group entries two stateless builds disagree on (the LR aside)."""
    return {(i, k) for i, (ga, gb) in enumerate(zip(a, b)) for k in gb if k != "lr" and not (k in ga and _same(ga[k], gb[k]))}


def apply_optimizer_changes(optimizer: torch.optim.Optimizer, model: nn.Module, now: Any, saved: dict[str, Any],
                            changes: dict[str, tuple[Any, Any]], device: torch.device) -> dict[str, list[str]]:
    """Put the allowed ``optim.*`` changes of a resume into ``optimizer``'s restored param groups.

    ``now`` is today's optimizer config, ``saved`` the checkpoint's (a dict), ``changes`` the vetted
    differences. Returns ``{optim field: [param-group keys it set]}`` (empty for a field the loop reads);
    raises ``ConfigError`` for a field that neither reaches a param group nor is read by the loop."""

    fields = sorted(k.split(".", 1)[1] for k in changes if k.startswith("optim."))
    if not fields:
        return {}
    refuse_fixed_fields(changes)

    def groups(cfg: Any) -> list[dict[str, Any]]:
        return _group_values(build_optimizer(model, cfg, device))

    old_cfg = saved_optim_config(now, saved)
    built_old, built_now = groups(old_cfg), groups(now)
    restored = optimizer.param_groups
    if not (len(built_old) == len(built_now) == len(restored)):
        raise ConfigError(f"the checkpoint's optimizer has {len(restored)} parameter groups, but optim={now.name} builds "
                          f"{len(built_now)}: the checkpoint does not fit this optimizer. It was left untouched.")
    applied: dict[str, list[str]] = {}
    for f in fields:
        keys = sorted({k for _, k in _differing_keys(built_old, groups(_with_field(old_cfg, f, now)))})
        if not keys and f.split(".", 1)[0] not in LOOP_READ_FIELDS:
            raise ConfigError(_refusal([f], "the optimizer reads the value only when it is built, not from its parameter groups"))
        applied[f] = keys
    for i, key in _differing_keys(built_old, built_now):
        restored[i][key] = built_now[i][key]
    return applied


def _refusal(fields: list[str], why: str) -> str:
    names = ", ".join(f"optim.{f}" for f in fields)
    return (f"train.resume_allow names {names}, but a resumed run cannot apply {'it' if len(fields) == 1 else 'them'}: "
            f"{why}. Put {'it' if len(fields) == 1 else 'them'} back to the checkpoint's value, or start a new run in "
            f"another train.out_dir (init_from=<this run's folder> keeps the weights). The checkpoint was left untouched.")
