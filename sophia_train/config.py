"""Structured configs: one dataclass per config group, registered as Hydra schemas.

Every yaml under ``configs/<group>/`` starts from the schema of its group (``defaults: [<schema>]``),
so a typo such as ``optim.rhoo=1`` is refused by Hydra, and ``OmegaConf.to_object`` hands the code
below ``__main__`` real dataclasses. ``validate`` turns impossible values into one clear message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from sophia_train.errors import ConfigError, StoppedBySignal, TrainingDiverged  # noqa: F401  (re-exported)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{dotted key: leaf value}`` (an empty table has no key)."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def in_range(name: str, value: Any, lo: float, hi: float, lo_closed: bool = True, hi_closed: bool = False) -> None:
    """Refuse a ``value`` of the setting ``name`` that is not a number in the interval (NaN never is)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi)
    interval = f"{'[' if lo_closed else '('}{lo:g}, {'inf' if hi == math.inf else f'{hi:g}'}{']' if hi_closed else ')'}"
    _require(ok, f"{name} must be a number in {interval}, got {value!r}.")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_curvature_hook(o: Any) -> None:
    """The curvature-hook fields Sophia and AdaHessian share: k >= 1, a fraction in (0, 1]. (The estimator's
    name is checked beside the registry of estimators: ``curvature.check_estimator``.)"""
    _require(o.hess_interval >= 1, f"optim.hess_interval must be >= 1, got {o.hess_interval}.")
    in_range("optim.hess_fraction", o.hess_fraction, 0, 1, lo_closed=False, hi_closed=True)



@dataclass
class ModelConfig:
    """GPT shape. ``vocab_size: null`` takes the dataset's vocabulary, padded to ``pad_vocab_to``."""

    name: str = MISSING
    n_layer: int = MISSING
    n_head: int = MISSING
    n_embd: int = MISSING
    block_size: int = 1024
    vocab_size: Optional[int] = None
    pad_vocab_to: int = 64
    dropout: float = 0.0
    bias: bool = False
    attn_scale_by_layer: bool = False
    activation: str = "gelu"  # gelu (exact, as nanoGPT) | gelu_tanh (OpenAI GPT-2's tanh approximation, set by init_from)


@dataclass
class OptimConfig:
    """Fields every optimizer has; each optimizer's schema adds its own.

    The schemas are the one place an optimizer's defaults live: the optimizer classes take their
    signature defaults from them, and the YAML files under configs/optim/ state only what differs."""

    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0

    def check(self) -> None:
        """Refuse impossible values of the fields every optimizer has (``ConfigError``); subclasses add theirs."""
        _require(_finite(self.lr) and self.lr > 0, f"optim.lr must be a positive number, got {self.lr}.")
        _require(_finite(self.weight_decay) and self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}.")
        eps = getattr(self, "eps", None)
        if eps is not None:
            _require(_finite(eps) and eps > 0, f"optim.eps must be a positive number, got {eps}.")
        betas = getattr(self, "betas", None)
        if betas is not None:
            _require(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
                     f"optim.betas must be two numbers in [0, 1), got {list(betas)}.")


@dataclass
class AdamWConfig(OptimConfig):
    """torch.optim.AdamW (fused on CUDA, foreach elsewhere); paper Sec. 3.1 baseline settings."""

    name: str = "adamw"
    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1


@dataclass
class SophiaConfig(OptimConfig):
    """The Sophia family: Sophia-G/-H and the paper's ablations (Sec. 3.5), one update rule.

    ``denominator`` (the name the kernel uses too): ``official`` = SophiaG, rho*bs*max(h, 0) + eps with bs =
    tokens per step; ``max`` = Sophia-H, paper Eq. (6) max(rho*h, eps) with rho playing gamma; ``max_sqrt`` =
    AH+clip, an EMA of h_hat^2 and max(rho*sqrt(h), eps). ``estimator`` feeds ``h`` every
    ``hess_interval`` steps on ``hess_fraction`` of each micro-batch's sequences (paper: GNB 240 of
    480, Hutchinson 32 of 480). ``clip=false`` drops the min(., 1).
    """

    name: str = "sophia_g"
    denominator: str = "official"
    lr: float = 6e-4  # Table 2, GPT-2 small
    betas: tuple[float, float] = (0.965, 0.99)  # Sec. 3.1 and the official code
    rho: float = 0.05
    eps: float = 1e-15
    weight_decay: float = 0.2
    estimator: str = "gnb"
    hess_interval: int = 10  # k (Sec. 3.1)
    hess_fraction: float = 0.5  # GNB on 240 of 480 sequences
    clip: bool = True
    fused: Optional[bool] = None  # Triton kernel over flat buffers; None: on CUDA when triton is installed
    foreach: Optional[bool] = None  # torch._foreach_* path; false: the per-tensor loop

    def check(self) -> None:
        """Sophia's own ranges, and an estimator from the one registry (``curvature.ESTIMATORS``)."""
        super().check()
        _require(_finite(self.rho) and self.rho > 0, f"optim.rho must be positive and finite, got {self.rho}.")
        names = ("official", "max", "max_sqrt")  # the kernel's DENOMINATORS
        _require(self.denominator in names, f"optim.denominator must be one of {', '.join(names)}, got {self.denominator!r}.")
        check_curvature_hook(self)


@dataclass
class SophiaHConfig(SophiaConfig):
    """Sophia-H (Alg. 1 + 3, Eq. 6): Hutchinson on 32 of 480 sequences, gamma = 0.01 (Sec. 3.1)."""

    name: str = "sophia_h"
    denominator: str = "max"
    betas: tuple[float, float] = (0.96, 0.99)
    rho: float = 0.01  # the paper's gamma
    eps: float = 1e-12
    estimator: str = "hutchinson"
    hess_fraction: float = 0.0667  # 32 / 480


@dataclass
class AdaHessianConfig(OptimConfig):
    """AdaHessian (Yao et al. 2021) with the paper's betas (0.92, 0.99); Hutchinson every k steps."""

    name: str = "adahessian"
    lr: float = 6e-4
    betas: tuple[float, float] = (0.92, 0.99)
    eps: float = 1e-4
    weight_decay: float = 0.1
    hessian_power: float = 1.0
    estimator: str = "hutchinson"
    hess_interval: int = 1
    hess_fraction: float = 0.0667

    def check(self) -> None:
        """AdaHessian's ranges: Hutchinson only, Hessian power k in [0, 1] (Yao et al. 2021, Eq. 9)."""
        super().check()
        in_range("optim.hessian_power", self.hessian_power, 0, 1, hi_closed=True)
        check_curvature_hook(self)
        _require(self.estimator == "hutchinson", "AdaHessian needs optim.estimator=hutchinson.")


@dataclass
class LionConfig(OptimConfig):
    """Lion with the Sophia paper's baseline betas (0.95, 0.98) and wd 0.2."""

    name: str = "lion"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.95, 0.98)
    weight_decay: float = 0.2
    foreach: Optional[bool] = None  # None: foreach lists (chunked on CPU); False: the per-tensor loop
    fused: Optional[bool] = None  # Triton kernel over flat buffers; None: on CUDA when triton is installed


@dataclass
class S3Config(OptimConfig):
    """SoftSignSGD (S3 paper Alg. 1): one beta, p-th order denominator, Nesterov form."""

    name: str = "s3"
    lr: float = 3e-4
    beta: float = 0.95
    p: float = 3.0
    eps: float = 1e-8
    weight_decay: float = 0.1
    nesterov: bool = True
    foreach: Optional[bool] = None  # None: foreach lists (chunked on CPU); False: the per-tensor loop
    fused: Optional[bool] = None  # Triton kernel over flat buffers; None: on CUDA when triton is installed

    def check(self) -> None:
        """SoftSignSGD's ranges (S3 paper Alg. 1): beta in [0, 1), p >= 1."""
        super().check()
        _require(0 <= self.beta < 1 and self.p >= 1, f"optim.beta must be in [0, 1) and optim.p >= 1, got beta={self.beta}, p={self.p}.")


@dataclass
class NormalizeConfig(OptimConfig):
    """The paper's "Normalize" ablation: momentum rescaled to unit RMS per tensor."""

    name: str = "normalize"
    lr: float = 2e-4
    beta: float = 0.965
    eps: float = 1e-12
    weight_decay: float = 0.2

    def check(self) -> None:
        """The momentum's beta in [0, 1)."""
        super().check()
        in_range("optim.beta", self.beta, 0, 1)


@dataclass
class MuonConfig(OptimConfig):
    """torch.optim.Muon on hidden matrices + AdamW on the rest, one LR (Muon's match_rms_adamw)."""

    name: str = "muon"
    lr: float = 1e-3
    weight_decay: float = 0.1
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8

    def check(self) -> None:
        """Muon's momentum in [0, 1) and at least one Newton-Schulz step."""
        super().check()
        in_range("optim.momentum", self.momentum, 0, 1)
        _require(self.ns_steps >= 1, f"optim.ns_steps (Newton-Schulz iterations) must be >= 1, got {self.ns_steps}.")


@dataclass
class SOAPConfig(OptimConfig):
    """SOAP (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"): Adam run in the
    eigenbasis of Shampoo's preconditioner, refreshed every ``precondition_frequency`` steps; the
    paper's defaults, run by ``heavyball.SOAP`` (the ``peers`` extra)."""

    name: str = "soap"
    lr: float = 3e-3
    betas: tuple[float, float] = (0.95, 0.95)
    shampoo_beta: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    precondition_frequency: int = 10
    max_precond_dim: int = 2048  # dimensions larger than this (the vocabulary) are not preconditioned

    def check(self) -> None:
        """SOAP's ranges: a preconditioner refreshed at least every step's worth, dimensions >= 1."""
        super().check()
        in_range("optim.shampoo_beta", self.shampoo_beta, 0, 1)
        _require(self.precondition_frequency >= 1, f"optim.precondition_frequency must be >= 1 (steps), got {self.precondition_frequency}.")
        _require(self.max_precond_dim >= 1, f"optim.max_precond_dim must be >= 1, got {self.max_precond_dim}.")


@dataclass
class KronConfig(OptimConfig):
    """PSGD Kron (Li 2018, "Preconditioner on Matrix Lie Group for SGD"; the Kronecker-factored form of
    kron_torch): momentum preconditioned by a learned Kronecker-factored matrix; ``heavyball.PSGDKron``."""

    name: str = "kron"
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)  # betas[0]: the momentum
    weight_decay: float = 0.0
    precond_lr: float = 0.1
    max_size_triangular: int = 8192  # larger dimensions get a diagonal factor

    def check(self) -> None:
        """Kron's preconditioner learning rate in (0, 1] and dimensions >= 1."""
        super().check()
        in_range("optim.precond_lr", self.precond_lr, 0, 1, lo_closed=False, hi_closed=True)
        _require(self.max_size_triangular >= 1, f"optim.max_size_triangular must be >= 1, got {self.max_size_triangular}.")


@dataclass
class TorchOptimConfig(OptimConfig):
    """Any ``torch.optim`` class by name; ``kwargs`` go to its constructor unchanged."""

    name: str = MISSING
    torch_class: str = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """A prepared token dataset: ``dir`` holds ``train.bin``, ``val.bin`` and ``meta.json``."""

    name: str = MISSING
    dir: str = MISSING


@dataclass
class TrainConfig:
    """Batch, schedule, evaluation, checkpointing and run bookkeeping."""

    batch_size: int = 8  # sequences per micro-batch (per process)
    grad_accum: int = 1  # micro-batches per optimizer step on each process: the global batch is
    #                      batch_size x grad_accum x processes (set global_batch to fix it for any process count)
    global_batch: Optional[int] = None  # sequences per step over all processes; when set it replaces grad_accum
    seq_len: Optional[int] = None  # defaults to the model's block_size
    max_steps: int = 1000
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # final LR = 0.05 x peak (paper Sec. 3.1)
    grad_clip: float = 1.0  # global grad-norm clip; 0 disables
    eval_interval: int = 200
    eval_iters: int = 20
    log_interval: int = 10
    ckpt_interval: int = 500  # 0: only at the end
    out_dir: str = "runs/${run_name}"
    resume: bool = False  # continue the run in out_dir from its checkpoint
    resume_allow: list[str] = field(default_factory=list)  # run-defining settings a resume may change, e.g. [optim.lr]
    overwrite: bool = False  # start afresh even if out_dir holds a checkpoint (it is replaced at the first save)
    stop_after_step: Optional[int] = None  # end this invocation early; the schedule still targets max_steps
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA if supported, else fp32) | float32 | bfloat16
    compile: bool = False
    parallel: str = "ddp"  # ddp (every rank holds everything) | fsdp (FSDP2: parameters, gradients, optimizer state sharded)
    threads: Optional[int] = None  # torch CPU threads; None keeps torch's default
    plot: bool = True  # write loss_curve.png into out_dir at the end
    log_update_stats: bool = False  # max/mean |delta theta| at log steps (S3 Fig. 2): a copy of every parameter on those steps
    skip_nonfinite: bool = False  # skip a step whose loss or grad norm is NaN/inf (no update; one host sync per step)
    max_skips_in_row: int = 10  # with skip_nonfinite: stop (exit 3) after this many skipped steps in a row
    eval_only: bool = False  # evaluate train and val loss of out_dir's checkpoint (else init_from / a fresh model), write nothing, exit
    keep_best: bool = False  # also keep best.pt: the full checkpoint at the evaluation with the lowest val loss so far


@dataclass
class LoggerConfig:
    """Where metrics go besides the console and ``metrics.jsonl``."""

    wandb: bool = False
    wandb_project: str = "sophia_train"
    wandb_run_name: Optional[str] = None


@dataclass
class Config:
    """The whole run. ``model`` has no default: choose it with ``+model=NAME``."""

    model: Optional[ModelConfig] = None
    optim: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run_name: str = MISSING
    init_from: Optional[str] = None  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | HF folder | run folder (see pretrained.py)


OPTIM_SCHEMAS: dict[str, type] = {
    "adamw": AdamWConfig,
    "sophia": SophiaConfig,
    "sophia_h": SophiaHConfig,
    "adahessian": AdaHessianConfig,
    "lion": LionConfig,
    "s3": S3Config,
    "normalize": NormalizeConfig,
    "muon": MuonConfig,
    "soap": SOAPConfig,
    "kron": KronConfig,
    "torch": TorchOptimConfig,
}


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


MAX_EVAL_ITERS = 100_000  # batches per evaluation; far above any real use, far below "runs for ever"


def validate(cfg: Config, world_size: int = 1) -> None:
    """Refuse impossible settings with a message that says what to change."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    _require(m is not None, "no model chosen: add +model=NAME (see `python -m sophia_train` for the list).")
    _require(m.n_layer > 0 and m.n_head > 0 and m.n_embd > 0, f"model {m.name}: n_layer, n_head, n_embd must be positive.")
    _require(
        m.n_embd % m.n_head == 0,
        f"model {m.name}: n_embd={m.n_embd} is not divisible by n_head={m.n_head}.",
    )
    _require(m.block_size > 0, f"model {m.name}: block_size must be positive, got {m.block_size}.")
    _require(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}.")
    _require(m.activation in ("gelu", "gelu_tanh"), f"model.activation must be gelu or gelu_tanh, got {m.activation!r}.")
    if hasattr(o, "check"):
        o.check()  # each optimizer schema checks its own fields
    seq_len = t.seq_len if t.seq_len is not None else m.block_size
    _require(seq_len > 0, f"train.seq_len must be positive, got {seq_len}.")
    _require(
        seq_len <= m.block_size,
        f"train.seq_len={seq_len} is larger than the block size of model {m.name} ({m.block_size}); "
        f"lower train.seq_len or raise model.block_size.",
    )
    _require(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}.")
    _require(t.grad_accum > 0, f"train.grad_accum must be positive, got {t.grad_accum}.")
    _require(t.max_steps > 0, f"train.max_steps must be positive, got {t.max_steps}.")
    _require(0 <= t.warmup_steps <= t.max_steps, f"train.warmup_steps must be in [0, max_steps={t.max_steps}], got {t.warmup_steps}.")
    _require(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}.")
    _require(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables), got {t.grad_clip}.")
    _require(t.eval_iters > 0 and t.eval_interval > 0 and t.log_interval > 0, "train.eval_iters, eval_interval and log_interval must be positive.")
    _require(t.eval_iters <= MAX_EVAL_ITERS, f"train.eval_iters={t.eval_iters} batches per evaluation would take longer than the "
             f"training itself (the limit is {MAX_EVAL_ITERS:,}; the paper's setting is 200); lower it.")
    _require(0 <= t.seed < 2**63, f"train.seed must be an integer in [0, 2**63), got {t.seed} (numpy's and torch's generators "
             f"take no negative or larger seed).")
    _require(bool(str(t.out_dir).strip()), "train.out_dir is empty, which would write the run into the current folder; give "
             "it a folder (default runs/<run_name>).")
    _require(t.ckpt_interval >= 0, f"train.ckpt_interval must be >= 0, got {t.ckpt_interval}.")
    _require(t.max_skips_in_row >= 1, f"train.max_skips_in_row must be >= 1, got {t.max_skips_in_row}.")
    _require(t.threads is None or t.threads >= 0, f"train.threads must be >= 1 (or 0 / null for torch's default), got {t.threads}.")
    if t.stop_after_step is not None:
        _require(0 < t.stop_after_step <= t.max_steps, f"train.stop_after_step must be in (0, max_steps], got {t.stop_after_step}.")
    _require(t.dtype in ("auto", "float32", "bfloat16"), f"train.dtype must be auto, float32 or bfloat16, got {t.dtype!r}.")
    _require(t.parallel in ("ddp", "fsdp"), f"train.parallel must be ddp or fsdp, got {t.parallel!r}.")
    _require(
        not (t.parallel == "fsdp" and isinstance(o, (SOAPConfig, KronConfig))),
        f"optim={o.name} (heavyball) preconditions whole matrices and is not wired for FSDP shards yet; train it "
        f"with train.parallel=ddp.",
    )
    accum_per_rank(total_accum(t, world_size), world_size)


def total_accum(t: "TrainConfig", world_size: int = 1) -> int:
    """Micro-batches per optimizer step over all processes: ``global_batch / batch_size`` when it is set (the
    same for any process count), else ``grad_accum`` on each of the ``world_size`` processes."""
    if t.global_batch is None:
        return t.grad_accum * world_size
    accum, rem = divmod(t.global_batch, t.batch_size)
    if rem or accum == 0:
        raise ConfigError(
            f"train.global_batch={t.global_batch} is not a multiple of train.batch_size={t.batch_size}; "
            f"choose a micro-batch that divides it (e.g. {', '.join(str(d) for d in range(1, 33) if t.global_batch % d == 0)})."
        )
    return accum


def accum_per_rank(total: int, world_size: int) -> int:
    """Micro-batches each process runs per step, ``total`` (over all processes) split evenly."""
    per_rank, rem = divmod(total, world_size)
    if rem or per_rank == 0:
        raise ConfigError(
            f"train.global_batch asks for {total} micro-batches per step, which cannot be split evenly over {world_size} "
            f"processes: make train.global_batch a multiple of train.batch_size x {world_size}, or leave it unset "
            f"(train.grad_accum then counts micro-batches per process and the global batch grows with the process count)."
        )
    return per_rank
