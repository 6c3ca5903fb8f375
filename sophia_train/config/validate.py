"""``validate``: impossible combinations of settings refused in one clear message before any work, and
the batch arithmetic (micro-batches per step over all processes and per process)."""

from __future__ import annotations

from sophia_train.config.checks import require
from sophia_train.config.optimizers import KronConfig, SOAPConfig
from sophia_train.config.schema import Config, TrainConfig
from sophia_train.errors import ConfigError

MAX_EVAL_ITERS = 100_000  # batches per evaluation; far above any real use, far below "runs for ever"


def validate(cfg: Config, world_size: int = 1) -> None:
    """Refuse impossible settings with a message that says what to change."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    require(m is not None, "no model chosen: add +model=NAME (see `python -m sophia_train` for the list).")
    require(m.n_layer > 0 and m.n_head > 0 and m.n_embd > 0, f"model {m.name}: n_layer, n_head, n_embd must be positive.")
    require(
        m.n_embd % m.n_head == 0,
        f"model {m.name}: n_embd={m.n_embd} is not divisible by n_head={m.n_head}.",
    )
    require(m.block_size > 0, f"model {m.name}: block_size must be positive, got {m.block_size}.")
    require(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}.")
    require(m.activation in ("gelu", "gelu_tanh"), f"model.activation must be gelu or gelu_tanh, got {m.activation!r}.")
    if hasattr(o, "check"):
        o.check()  # each optimizer schema checks its own fields
    seq_len = t.seq_len if t.seq_len is not None else m.block_size
    require(seq_len > 0, f"train.seq_len must be positive, got {seq_len}.")
    require(
        seq_len <= m.block_size,
        f"train.seq_len={seq_len} is larger than the block size of model {m.name} ({m.block_size}); "
        f"lower train.seq_len or raise model.block_size.",
    )
    require(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}.")
    require(t.grad_accum > 0, f"train.grad_accum must be positive, got {t.grad_accum}.")
    require(t.max_steps > 0, f"train.max_steps must be positive, got {t.max_steps}.")
    require(0 <= t.warmup_steps <= t.max_steps, f"train.warmup_steps must be in [0, max_steps={t.max_steps}], got {t.warmup_steps}.")
    require(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}.")
    require(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables), got {t.grad_clip}.")
    require(t.eval_iters > 0 and t.eval_interval > 0 and t.log_interval > 0, "train.eval_iters, eval_interval and log_interval must be positive.")
    require(t.eval_iters <= MAX_EVAL_ITERS, f"train.eval_iters={t.eval_iters} batches per evaluation would take longer than the "
             f"training itself (the limit is {MAX_EVAL_ITERS:,}; the paper's setting is 200); lower it.")
    require(0 <= t.seed < 2**63, f"train.seed must be an integer in [0, 2**63), got {t.seed} (numpy's and torch's generators "
             f"take no negative or larger seed).")
    require(bool(str(t.out_dir).strip()), "train.out_dir is empty, which would write the run into the current folder; give "
             "it a folder (default runs/<run_name>).")
    require(t.ckpt_interval >= 0, f"train.ckpt_interval must be >= 0, got {t.ckpt_interval}.")
    require(t.max_skips_in_row >= 1, f"train.max_skips_in_row must be >= 1, got {t.max_skips_in_row}.")
    require(t.threads is None or t.threads == "auto" or str(t.threads).isdigit(),
            f"train.threads must be >= 1, auto (the default: the cores free for this process), or 0 / null for torch's "
            f"default, got {t.threads!r}.")
    if t.stop_after_step is not None:
        require(0 < t.stop_after_step <= t.max_steps, f"train.stop_after_step must be in (0, max_steps], got {t.stop_after_step}.")
    require(t.dtype in ("auto", "float32", "bfloat16"), f"train.dtype must be auto, float32 or bfloat16, got {t.dtype!r}.")
    require(t.parallel in ("ddp", "fsdp"), f"train.parallel must be ddp or fsdp, got {t.parallel!r}.")
    require(
        not (t.parallel == "fsdp" and isinstance(o, (SOAPConfig, KronConfig))),
        f"optim={o.name} (heavyball) preconditions whole matrices and is not wired for FSDP shards yet; train it "
        f"with train.parallel=ddp.",
    )
    require(cfg.reference in (None, "sophia_paper"), f"reference must be sophia_paper or null, got {cfg.reference!r}.")
    accum_per_rank(total_accum(t, world_size), world_size)


def total_accum(t: TrainConfig, world_size: int = 1) -> int:
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
