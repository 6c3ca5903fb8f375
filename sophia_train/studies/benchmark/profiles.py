"""What a benchmark runs: the profiles (model sizes, budgets, seeds, search spaces) and how one
hyperparameter point becomes a run's config overrides and folder name."""

from __future__ import annotations

from dataclasses import dataclass, field

from sophia_train.compose import compose_config


@dataclass(frozen=True)
class Size:
    """A model size: its overrides and its budgets (optimizer steps; tokens = steps x tokens per step)."""

    name: str
    overrides: tuple[str, ...]
    steps: tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """What one benchmark runs (see the module docstring)."""

    name: str
    base: tuple[str, ...]  # overrides every run shares (data, batch, evaluation)
    sizes: tuple[Size, ...]
    seeds: tuple[int, ...]
    spaces: dict[str, dict[str, list[float]]]  # Phase I: optimizer -> hyperparameter -> first grid
    phase2: dict[str, tuple[str, ...]] = field(default_factory=dict)  # retuned at every other (size, budget)

    @property
    def optims(self) -> list[str]:
        return list(self.spaces)

    @property
    def n_budgets(self) -> int:
        """(size, budget) points over all sizes."""
        return sum(len(s.steps) for s in self.sizes)


_BASE_CPU = ("train.batch_size=8", "train.seq_len=64", "train.eval_iters=8", "train.log_interval=50", "train.plot=false",
             "train.grad_clip=1.0")
_CPU_STEPS = (100, 200, 400, 800)


def _five(center: float) -> list[float]:
    """A log grid of 5 points, x2 apart, around ``center``."""
    return [center * 2.0**k for k in (-2, -1, 0, 1, 2)]


def _own_spaces(lr: dict[str, float], warmup: list[float]) -> dict[str, dict[str, list[float]]]:
    """Phase I search spaces: every optimizer's own hyperparameters around its usual values, the LR (and
    Sophia's rho) on 5 points since the loss is noisy there, the rest on 3; the warmup fraction for all."""
    wd = [0.05, 0.1, 0.2]
    own = {
        "adamw": {"one_minus_beta2": [0.025, 0.05, 0.1], "weight_decay": wd},
        "lion": {"one_minus_beta2": [0.01, 0.02, 0.04], "weight_decay": [0.1, 0.2, 0.4]},
        "sophia_g": {"rho": _five(0.05), "hess_interval": [5, 10, 20], "one_minus_beta2": [0.005, 0.01, 0.02],
                     "weight_decay": [0.1, 0.2, 0.4]},
        "sophia_h": {"rho": _five(0.01), "hess_interval": [5, 10, 20], "one_minus_beta2": [0.005, 0.01, 0.02],
                     "weight_decay": [0.1, 0.2, 0.4]},
        "s3": {"one_minus_beta": [0.025, 0.05, 0.1], "p": [2, 3, 4], "weight_decay": wd},
        "muon": {"weight_decay": wd},
        "soap": {"one_minus_beta2": [0.025, 0.05, 0.1], "weight_decay": [0.005, 0.01, 0.02]},
        "kron": {"weight_decay": [0.025, 0.05, 0.1]},
    }
    return {o: {"lr": _five(lr[o]), **own[o], "warmup": list(warmup)} for o in lr}


# Phase II: what each optimizer retunes at every other (size, budget): the LR, and rho for Sophia
_PHASE2 = {"adamw": ("lr",), "lion": ("lr",), "sophia_g": ("lr", "rho"), "sophia_h": ("lr", "rho"), "s3": ("lr",),
           "muon": ("lr",), "soap": ("lr",), "kron": ("lr",)}


PROFILES: dict[str, Profile] = {
    "quick": Profile(  # what the tests run end to end: 3 sizes x 3 budgets, 2 seeds, a few minutes on 2 cores
        name="quick",
        base=("train.batch_size=8", "train.seq_len=32", "train.eval_iters=4", "train.log_interval=100", "train.plot=false"),
        sizes=tuple(Size(f"nano{d}", ("+model=nano", f"model.n_embd={d}", "model.n_head=2"), (100, 200, 400)) for d in (16, 32, 48)),
        seeds=(0, 1),
        spaces={"adamw": {"lr": [1e-2, 2e-2, 4e-2]}, "sophia_g": {"lr": [4e-3, 8e-3, 1.6e-2], "rho": [0.1, 0.2, 0.4]}},
        phase2={"adamw": ("lr",), "sophia_g": ("lr",)},
    ),
    "cpu": Profile(  # byte-level models on the embedded corpus; 4 budgets per size, so AdamW's fit has a residual
        name="cpu",
        base=_BASE_CPU,
        sizes=(Size("tiny2x64", ("+model=tiny", "model.n_layer=2", "model.n_embd=64", "model.n_head=2"), _CPU_STEPS),
               Size("tiny3x96", ("+model=tiny", "model.n_layer=3", "model.n_embd=96", "model.n_head=3"), _CPU_STEPS),
               Size("tiny4x128", ("+model=tiny",), _CPU_STEPS)),
        seeds=(0, 1, 2),
        spaces=_own_spaces({"adamw": 2e-3, "lion": 5e-4, "sophia_g": 6e-4, "sophia_h": 6e-4, "s3": 1e-3, "muon": 1e-3,
                            "soap": 3e-3, "kron": 3e-4}, warmup=[0.025, 0.05, 0.1]),
        phase2=_PHASE2,
    ),
    "gpu_small": Profile(  # OpenWebText, GPT-2 BPE, the paper's batch (480 x 1024): see --estimate for GPU-hours
        name="gpu_small",
        base=("+experiment=paper", "train.eval_iters=50", "train.plot=false"),
        sizes=(Size("gpt2_30m", ("+model=gpt2_30m",), (2500, 5000, 10000)),
               Size("gpt2_small", ("+model=gpt2_small",), (5000, 10000, 20000)),
               Size("gpt2_medium", ("+model=gpt2_medium",), (10000, 20000, 40000))),
        seeds=(0, 1, 2),
        spaces=_own_spaces({"adamw": 6e-4, "lion": 1e-4, "sophia_g": 3e-4, "sophia_h": 3e-4, "s3": 6e-4, "muon": 2e-3,
                            "soap": 3e-3, "kron": 3e-4}, warmup=[0.01, 0.02, 0.04]),
        phase2=_PHASE2,
    ),
}


def overrides_for(optim: str, point: dict[str, float], steps: int) -> list[str]:
    """Config overrides of one hyperparameter point (1 - beta and the warmup fraction turned into settings)."""
    out = [f"optim={optim}", f"train.max_steps={steps}"]
    warmup = point.get("warmup", 0.05)
    out.append(f"train.warmup_steps={max(1, round(warmup * steps))}")
    defaults = None
    for key, value in sorted(point.items()):
        if key == "warmup":
            continue
        if key == "one_minus_beta2":
            defaults = defaults or compose_config(["+model=nano", f"optim={optim}"]).optim
            out.append(f"optim.betas=[{defaults.betas[0]},{1 - value:.6g}]")
        elif key == "one_minus_beta":
            out.append(f"optim.beta={1 - value:.6g}")
        elif key in ("hess_interval", "p"):
            out.append(f"optim.{key}={max(1, round(value))}")
        else:
            out.append(f"optim.{key}={value:.6g}")
    return out


def feasible(point: dict[str, float]) -> bool:
    """Whether a point can be trained: everything positive, the warmup at most the whole run, each beta above 0."""
    betas_ok = all(point[k] < 1 for k in ("one_minus_beta", "one_minus_beta2") if k in point)
    return all(v > 0 for v in point.values()) and point.get("warmup", 0) <= 1 and betas_ok


def run_name(size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> str:
    """Folder name of one run: size, optimizer, hyperparameters, budget and seed."""
    hp = "-".join(f"{k}{v:.4g}" for k, v in sorted(point.items()))
    return f"{size.name}-{optim}-{hp}-T{steps}-s{seed}"
