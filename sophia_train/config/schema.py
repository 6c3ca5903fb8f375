"""Structured configs: one dataclass per config group, registered as Hydra schemas.

Every yaml under ``configs/<group>/`` starts from the schema of its group (``defaults: [<schema>]``),
so a typo such as ``optim.rhoo=1`` is refused by Hydra, and ``OmegaConf.to_object`` hands the code
below ``__main__`` real dataclasses. ``validate`` turns impossible values into one clear message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{dotted key: leaf value}`` (an empty table has no key)."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}




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
    threads: Any = "auto"  # torch CPU threads: auto (cores / local ranks, fewer on a busy CPU; distributed/threads.py) | N | 0: torch default
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
    reference: Optional[str] = None  # sophia_paper: end the run with Fig. 4's val loss for its (model, optimizer) (set by +experiment=paper)
    init_from: Optional[str] = None  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | HF folder | run folder (see pretrained.py)

