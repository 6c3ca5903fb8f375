"""What a benchmark runs: the profiles (model sizes, budgets, seeds, search spaces) and how one
hyperparameter point becomes a run's config overrides and folder name."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sophia_train.compose import compose_config


@dataclass(frozen=True)
class Size:
    """A model size (or, on the batch axis, a batch size of one model): its overrides, its parameter count
    (``num_params``, the banner's rule) and tokens per step as the profile states them (a test checks both
    against the built model), and its budgets in optimizer steps, each with its own warmup + cosine schedule."""

    name: str
    overrides: tuple[str, ...]
    steps: tuple[int, ...]
    n_params: int = 0
    tokens_per_step: int = 0
    axis: str = "model"  # "batch": a point of the batch-size axis, compared at its own budgets
    retune: tuple[int, ...] | None = None  # budget indices Phase II tunes (None: all); the others reuse the nearest

    def tokens_per_param(self, steps: int) -> float:
        """Training tokens per parameter of the budget ``steps``."""
        return steps * self.tokens_per_step / self.n_params if self.n_params else math.nan


def budgets(n_params: int, tokens_per_step: int, tokens_per_param: tuple[float, ...]) -> tuple[int, ...]:
    """Optimizer steps that give ``tokens_per_param`` (Chinchilla's ~20 is the long end) at this size and batch."""
    return tuple(max(1, math.ceil(t * n_params / tokens_per_step - 1e-9)) for t in tokens_per_param)  # at least the target


@dataclass(frozen=True)
class Profile:
    """What one benchmark runs (see ``cli``'s docstring). Every scalar hyperparameter of each optimizer's
    schema is either in its search space or in ``fixed`` with the reason it is not searched."""

    name: str
    base: tuple[str, ...]  # overrides every run shares (data, batch, evaluation)
    sizes: tuple[Size, ...]
    seeds: tuple[int, ...]
    spaces: dict[str, dict[str, list[float]]]  # Phase I: optimizer -> hyperparameter -> first grid
    phase2: dict[str, tuple[str, ...]] = field(default_factory=dict)  # retuned at every other (size, budget)
    fixed: dict[str, dict[str, str]] = field(default_factory=dict)  # optimizer -> field -> why it is not searched
    tune_seeds: int = 1  # Phase I losses are the mean over the first this many seeds
    phase2_seeds: int = 1  # Phase II's over the first this many
    anchor_index: int | None = None  # Phase I's budget at the first size (None: the middle one)
    extensions: int = 3  # how far a line search may step past the edge of its grid
    ablation: bool = False  # also run each optimizer with beta1 at its default (LR and rho retuned), at the anchor
    joint: tuple[tuple[str, str], ...] = ()  # after coordinate descent, joint moves of these pairs (search.joint_search)
    note: str = ""  # said at the top of table.md

    @property
    def optims(self) -> list[str]:
        return list(self.spaces)

    @property
    def n_budgets(self) -> int:
        """(size, budget) points over all sizes."""
        return sum(len(s.steps) for s in self.sizes)

    @property
    def anchor(self) -> tuple[Size, int]:
        """Phase I's (size, budget): the first size at ``anchor_index`` (default its middle budget)."""
        first = self.sizes[0]
        return first, first.steps[len(first.steps) // 2 if self.anchor_index is None else self.anchor_index]


_BASE_CPU = ("train.batch_size=8", "train.seq_len=64", "train.eval_iters=8", "train.log_interval=50", "train.plot=false",
             "train.grad_clip=1.0")
_CPU_STEPS = (100, 200, 400, 800)
VAL_TOKENS = 65536  # protocol v2 evaluates every run on this many validation tokens


def _five(center: float) -> list[float]:
    """A log grid of 5 points, x2 apart, around ``center``."""
    return [center * 2.0**k for k in (-2, -1, 0, 1, 2)]


def _three(center: float) -> list[float]:
    """A log grid of 3 points, x2 apart, around ``center``."""
    return [center / 2, center, center * 2]


def _own_spaces(lr: dict[str, float], warmup: list[float], beta1: bool = False) -> dict[str, dict[str, list[float]]]:
    """Phase I search spaces: every optimizer's own hyperparameters around its usual values, the LR (and
    Sophia's rho) on 5 points since the loss is noisy there, the rest on 3; the warmup fraction for all.
    ``beta1``: also every first-moment coefficient, as 1 - beta (protocol v2)."""
    wd = [0.05, 0.1, 0.2]
    first = {"one_minus_beta1": _three(0.05)} if beta1 else {}
    own = {
        "adamw": {**first, "one_minus_beta2": [0.025, 0.05, 0.1], "weight_decay": wd},
        "lion": {**first, "one_minus_beta2": [0.01, 0.02, 0.04] if not beta1 else _three(0.08), "weight_decay": [0.1, 0.2, 0.4]},
        "sophia_g": {"rho": _five(0.05), "hess_interval": [5, 10, 20], **first, "one_minus_beta2": [0.005, 0.01, 0.02],
                     "weight_decay": [0.1, 0.2, 0.4]},
        "sophia_h": {"rho": _five(0.01), "hess_interval": [5, 10, 20], **first, "one_minus_beta2": [0.005, 0.01, 0.02],
                     "weight_decay": [0.1, 0.2, 0.4]},
        "s3": {"one_minus_beta": [0.025, 0.05, 0.1], "p": [2, 3, 4], "weight_decay": wd},
        "muon": {**({"one_minus_momentum": _three(0.05)} if beta1 else {}), "weight_decay": wd},
        "soap": {**first, "one_minus_beta2": [0.025, 0.05, 0.1], "weight_decay": [0.005, 0.01, 0.02]},
        "kron": {**first, "weight_decay": [0.025, 0.05, 0.1]},
    }
    return {o: {"lr": _five(lr[o]), **own[o], "warmup": list(warmup)} for o in lr}


_IMPLEMENTATION = "an implementation choice (same update, tested equal): not a hyperparameter"
_NOT_HP = {"name": "the optimizer's name, not a hyperparameter"}
# Why each schema field a benchmark does not search is left at its default (the house rule: searched or fixed with a reason).
FIXED: dict[str, dict[str, str]] = {
    "adamw": {**_NOT_HP, "eps": "a numerical floor under sqrt(v), orders of magnitude below it at these scales"},
    "lion": {**_NOT_HP, "foreach": _IMPLEMENTATION, "fused": _IMPLEMENTATION},
    "sophia_g": {**_NOT_HP, "eps": "guards the clip's division only; 1e-15 is below every h > 0",
                 "denominator": "the official rule (max(gamma * h, eps) with rho folded in) is the algorithm compared",
                 "estimator": "GNB defines Sophia-G (Alg. 2)",
                 "hess_fraction": "the paper's share (240 of 480 sequences); its cost is counted in the compute speedup",
                 "clip": "the per-coordinate clip is the algorithm (Alg. 3)", "foreach": _IMPLEMENTATION, "fused": _IMPLEMENTATION},
    "sophia_h": {**_NOT_HP, "eps": "guards the clip's division only", "denominator": "the paper's Eq. (6) rule, max(gamma * h, eps)",
                 "estimator": "Hutchinson defines Sophia-H", "hess_fraction": "the paper's 32 of 480 sequences; cost counted",
                 "clip": "the algorithm", "foreach": _IMPLEMENTATION, "fused": _IMPLEMENTATION},
    "s3": {**_NOT_HP, "eps": "a numerical floor under the p-th root", "nesterov": "the S3 paper's default (Alg. 1)",
           "foreach": _IMPLEMENTATION, "fused": _IMPLEMENTATION},
    "muon": {**_NOT_HP, "nesterov": "the reference implementation's default", "ns_steps": "5 Newton-Schulz steps, the reference's",
             "betas": "the AdamW that trains Muon's embeddings, head and gains: AdamW's own defaults",
             "eps": "that AdamW's numerical floor"},
    "soap": {**_NOT_HP, "eps": "a numerical floor", "shampoo_beta": "the SOAP paper's default (the preconditioner's EMA)",
             "precondition_frequency": "10, the SOAP paper's; a cost/quality trade-off, not tuned there either",
             "max_precond_dim": "a memory cap (leaves the vocabulary dimension unpreconditioned)"},
    "kron": {**_NOT_HP, "precond_lr": "PSGD's default preconditioner step", "max_size_triangular": "a memory cap",
             "betas": "heavyball's PSGD Kron uses the first beta as its momentum; kept at heavyball's defaults"},
}


# Phase II: what each optimizer retunes at every other (size, budget): the LR, and rho for Sophia
_PHASE2 = {"adamw": ("lr",), "lion": ("lr",), "sophia_g": ("lr", "rho"), "sophia_h": ("lr", "rho"), "s3": ("lr",),
           "muon": ("lr",), "soap": ("lr",), "kron": ("lr",)}
# the first-moment coefficient of each optimizer, as searched (1 - beta)
FIRST_MOMENT = {"adamw": "one_minus_beta1", "lion": "one_minus_beta1", "sophia_g": "one_minus_beta1", "sophia_h": "one_minus_beta1",
                "soap": "one_minus_beta1", "kron": "one_minus_beta1", "muon": "one_minus_momentum", "s3": "one_minus_beta"}
# protocol v2: the LR and rho (Sophia) or the first moment (the others) at every other (size, budget) and batch size
_PHASE2_V2 = {o: ("lr", "rho") if o.startswith("sophia") else ("lr", FIRST_MOMENT[o]) for o in FIRST_MOMENT}

_TINY2X64 = ("+model=tiny", "model.n_layer=2", "model.n_embd=64", "model.n_head=2")
_TINY_PARAMS = 115_008  # tiny2x64 by the banner's rule (nanoGPT's: position embeddings not counted)
_BASE_V2 = ("train.batch_size=8", "train.seq_len=64", f"train.eval_iters={VAL_TOKENS // 512}", "train.log_interval=100",
            "train.plot=false", "train.grad_clip=1.0")
_V2_OPTIMS = ("adamw", "sophia_g", "lion", "muon")  # what fits 3 h on 2 cores; the others: cpu_all or protocol v1
_CPU_LR = {"adamw": 4e-3, "sophia_g": 1e-3, "lion": 1e-3, "muon": 2e-2, "sophia_h": 1e-3, "s3": 4e-3, "soap": 1e-2, "kron": 4e-3}


def _batch_point(batch: int, tokens_per_param: tuple[float, ...]) -> Size:
    """tiny2x64 at ``batch`` sequences of 64 per step (eval kept at VAL_TOKENS), Phase II at its last budget."""
    tokens = batch * 64
    return Size(f"tiny2x64-b{tokens}", (*_TINY2X64, f"train.batch_size={batch}", f"train.eval_iters={VAL_TOKENS // tokens}"),
                budgets(_TINY_PARAMS, tokens, tokens_per_param), _TINY_PARAMS, tokens, axis="batch", retune=(len(tokens_per_param) - 1,))


# Protocol v2.1: LR and warmup also move together after coordinate descent. The v2 cpu run's Sophia-G stopped at
# LR 2.5e-4 / warmup 5 % (2.11 nats at 5 tokens/param) because each alone looked worse; moved together (2e-3, 40 %)
# they gave 1.74 (results/benchmark_cpu_v2/probe_joint_moves.md); AdamW gained nothing from the same move.
JOINT = (("lr", "warmup"),)


def _cpu_v2(optims: tuple[str, ...], joint: tuple[tuple[str, str], ...] = JOINT) -> dict:
    """Protocol v2 at CPU scale: tiny2x64 from 2.5 to 20 tokens per parameter (batch 512 tokens), a batch axis
    at 2,048 and 4,096 tokens per step with budgets that grow with the batch, two-seed Phase I at 5 tokens per
    parameter, 64K validation tokens, beta1 searched, grids extended up to 8 times past an edge; ``joint``: the pairs
    that also move together after coordinate descent (v2.1; the v2 run had none)."""
    lr = {o: _CPU_LR[o] for o in optims}
    return dict(
        base=_BASE_V2,
        sizes=(Size("tiny2x64", _TINY2X64, budgets(_TINY_PARAMS, 512, (2.5, 5, 10, 20)), _TINY_PARAMS, 512),
               _batch_point(32, (10, 20)), _batch_point(64, (20, 40))),
        seeds=(0, 1, 2), spaces=_own_spaces(lr, warmup=[0.025, 0.05, 0.1], beta1=True),
        phase2={o: _PHASE2_V2[o] for o in optims}, fixed={o: FIXED[o] for o in optims},
        tune_seeds=2, phase2_seeds=1, anchor_index=1, extensions=8, ablation=True, joint=joint)


_V1_REASON = "protocol v1 left it at its default (the flaw issue 22 fixed); kept only to rebuild results/benchmark_cpu"
_GPT2 = {"gpt2_30m": 29_938_560, "gpt2_small": 123_587_328, "gpt2_medium": 353_551_360}
_PAPER_TOKENS = 491_520  # 480 x 1024


def _unsearched(spaces: dict[str, dict[str, list[float]]], reason: str) -> dict[str, dict[str, str]]:
    """``fixed`` for a profile that leaves everything it does not search at the defaults for one stated reason."""
    return {o: {"*": reason} for o in spaces}


PROFILES: dict[str, Profile] = {
    "quick": Profile(  # what the tests run end to end: 3 sizes x 3 budgets, 2 seeds, a few minutes on 2 cores
        name="quick",
        base=("train.batch_size=8", "train.seq_len=32", "train.eval_iters=4", "train.log_interval=100", "train.plot=false"),
        sizes=tuple(Size(f"nano{d}", ("+model=nano", f"model.n_embd={d}", "model.n_head=2"), (100, 200, 400), n, 256)
                    for d, n in ((16, 10_320), (32, 32_928), (48, 67_824))),
        seeds=(0, 1),
        spaces={"adamw": {"lr": [1e-2, 2e-2, 4e-2]}, "sophia_g": {"lr": [4e-3, 8e-3, 1.6e-2], "rho": [0.1, 0.2, 0.4]}},
        phase2={"adamw": ("lr",), "sophia_g": ("lr",)},
        fixed=_unsearched({"adamw": {}, "sophia_g": {}}, "quick tests the pipeline only: the LR (and rho) are searched"),
        note="**Pipeline test only**: models of 10-68K parameters for 100-400 steps on 4 val batches learn little beyond "
             "byte frequencies, so this table's differences are noise. The `cpu` profile is the measurement.",
    ),
    "cpu": Profile(name="cpu", **_cpu_v2(_V2_OPTIMS)),  # protocol v2.1
    "cpu_v2": Profile(name="cpu_v2", **_cpu_v2(_V2_OPTIMS, joint=())),  # v2 as results/benchmark_cpu_v2 ran it
    "cpu_all": Profile(name="cpu_all", **_cpu_v2(tuple(FIRST_MOMENT))),  # every optimizer: ~6-7 h on 2 cores
    "cpu_v1": Profile(  # protocol v1 (beta1 fixed, 0.03-3.4 tokens per parameter): what results/benchmark_cpu ran
        name="cpu_v1",
        base=_BASE_CPU,
        sizes=(Size("tiny2x64", _TINY2X64, _CPU_STEPS, _TINY_PARAMS, 512),
               Size("tiny3x96", ("+model=tiny", "model.n_layer=3", "model.n_embd=96", "model.n_head=3"), _CPU_STEPS, 357_024, 512),
               Size("tiny4x128", ("+model=tiny",), _CPU_STEPS, 820_352, 512)),
        seeds=(0, 1, 2),
        spaces=(v1 := _own_spaces({"adamw": 2e-3, "lion": 5e-4, "sophia_g": 6e-4, "sophia_h": 6e-4, "s3": 1e-3, "muon": 1e-3,
                                   "soap": 3e-3, "kron": 3e-4}, warmup=[0.025, 0.05, 0.1])),
        phase2=_PHASE2, fixed=_unsearched(v1, _V1_REASON),
        note="Protocol v1 (beta1 never searched, 0.03-3.4 tokens per parameter, Phase I on one seed, 4K val tokens): "
             "superseded by the `cpu` profile; its Sophia verdict is an artifact of that protocol.",
    ),
    "gpu_small": Profile(  # OpenWebText, GPT-2 BPE, the paper's batch (480 x 1024): see --estimate for GPU-hours
        name="gpu_small",
        base=("+experiment=paper", "train.eval_iters=50", "train.plot=false"),
        sizes=tuple(Size(name, (f"+model={name}",), budgets(n, _PAPER_TOKENS, (5, 10, 20)), n, _PAPER_TOKENS) for name, n in _GPT2.items()),
        seeds=(0, 1, 2),
        spaces=_own_spaces({"adamw": 6e-4, "lion": 1e-4, "sophia_g": 3e-4, "sophia_h": 3e-4, "s3": 6e-4, "muon": 2e-3,
                            "soap": 3e-3, "kron": 3e-4}, warmup=[0.01, 0.02, 0.04], beta1=True),
        phase2=_PHASE2_V2, fixed=FIXED, tune_seeds=2, phase2_seeds=1, anchor_index=1, extensions=8, ablation=True,
        joint=JOINT,
    ),
}


def overrides_for(optim: str, point: dict[str, float], steps: int) -> list[str]:
    """Config overrides of one hyperparameter point (1 - beta and the warmup fraction turned into settings)."""
    out = [f"optim={optim}", f"train.max_steps={steps}"]
    warmup = point.get("warmup", 0.05)
    out.append(f"train.warmup_steps={max(1, round(warmup * steps))}")
    if "one_minus_beta1" in point or "one_minus_beta2" in point:
        betas = list(compose_config(["+model=nano", f"optim={optim}"]).optim.betas)
        for i, key in enumerate(("one_minus_beta1", "one_minus_beta2")):
            if key in point:
                betas[i] = float(f"{1 - point[key]:.6g}")
        out.append(f"optim.betas=[{betas[0]},{betas[1]}]")
    for key, value in sorted(point.items()):
        if key in ("warmup", "one_minus_beta1", "one_minus_beta2"):
            continue
        if key == "one_minus_beta":
            out.append(f"optim.beta={1 - value:.6g}")
        elif key == "one_minus_momentum":
            out.append(f"optim.momentum={1 - value:.6g}")
        elif key in ("hess_interval", "p"):
            out.append(f"optim.{key}={max(1, round(value))}")
        else:
            out.append(f"optim.{key}={value:.6g}")
    return out


def feasible(point: dict[str, float]) -> bool:
    """Whether a point can be trained: everything positive, the warmup at most the whole run, each beta above 0."""
    betas_ok = all(point[k] < 1 for k in point if k.startswith("one_minus_"))
    return all(v > 0 for v in point.values()) and point.get("warmup", 0) <= 1 and betas_ok


def run_name(size: Size, optim: str, point: dict[str, float], steps: int, seed: int) -> str:
    """Folder name of one run: size, optimizer, hyperparameters, budget and seed."""
    hp = "-".join(f"{k}{v:.4g}" for k, v in sorted(point.items()))
    return f"{size.name}-{optim}-{hp}-T{steps}-s{seed}"


def first_moment_default(optim: str, key: str) -> float:
    """1 - the optimizer's default first-moment coefficient (betas[0], Muon's momentum or S3's beta), as searched."""
    o = compose_config(["+model=nano", f"optim={optim}"]).optim
    value = {"one_minus_beta1": lambda: o.betas[0], "one_minus_momentum": lambda: o.momentum, "one_minus_beta": lambda: o.beta}[key]()
    return float(f"{1 - value:.6g}")


def batch_axis(profile: Profile) -> list[tuple[Size, int]]:
    """(size, steps) of the batch axis: the first size at the budget its batch points start from, then each batch
    point at its largest budget."""
    batch = [s for s in profile.sizes if s.axis == "batch"]
    if not batch:
        return []
    first = profile.sizes[0]
    start = min(first.steps, key=lambda t: abs(first.tokens_per_param(t) - batch[0].tokens_per_param(batch[0].steps[0])))
    return [(first, start), *((s, s.steps[-1]) for s in batch)]
