"""The Sophia paper's numbers in one place: the per-model settings configs look up (Table 2's peak LRs and
Sec. 3.4's attention scaling, Hydra resolvers of ``configs/experiment/paper.yaml``) and the results a
reproduction is compared with (Fig. 4's final validation losses, Table 1's step time and compute).

Source: Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
Pre-training" (ICLR 2024), Fig. 4, Table 1 and Table 2."""

from __future__ import annotations

from dataclasses import dataclass

from sophia_train.errors import ConfigError

# Sophia paper Table 2: peak learning rates per model size and optimizer (blank cells are absent).
PAPER_PEAK_LR: dict[str, dict[str, float]] = {
    "gpt2_30m": {"adamw": 1.2e-3, "lion": 4e-4, "sophia_h": 1e-3, "sophia_g": 1e-3},
    "gpt2_small": {"adamw": 6e-4, "lion": 1.5e-4, "sophia_h": 6e-4, "sophia_g": 6e-4},
    "gpt2_medium": {"adamw": 3e-4, "lion": 6e-5, "sophia_h": 4e-4, "sophia_g": 4e-4},
    "gpt2_540m": {"adamw": 3e-4, "sophia_h": 4e-4, "sophia_g": 4e-4},
    "gpt2_large": {"adamw": 2e-4, "sophia_h": 3e-4, "sophia_g": 3e-4},
    "gpt2_xl": {"adamw": 1.5e-4, "sophia_g": 1.2e-4},
}
# AdamW and Lion need attention logits scaled by 1/layer-index from 355M up (Sec. 3.4, Fig. 6b).
ATTN_SCALE_FROM = {"gpt2_medium", "gpt2_540m", "gpt2_large", "gpt2_xl"}


def paper_peak_lr(model: str, optim: str) -> float:
    """Table 2's peak LR for (model, optimizer); a clear error where the paper gives none."""
    try:
        return PAPER_PEAK_LR[model][optim]
    except KeyError:
        known = ", ".join(f"{o} on {m}" for m, row in PAPER_PEAK_LR.items() for o in row)
        raise ConfigError(
            f"the Sophia paper's Table 2 gives no peak LR for optim={optim} on model={model}; set optim.lr "
            f"explicitly (Table 2 covers: {known})."
        ) from None


def paper_attn_scale(model: str, optim: str) -> bool:
    """Whether the paper scales attention by 1/layer-index for this (model, optimizer)."""
    return optim in ("adamw", "lion") and model in ATTN_SCALE_FROM


# ---- The paper's results, for comparing a reproduction with them --------------------------------------------

#: Steps of the main runs whose end the paper reports (Fig. 4; Sec. 3.3 "with the same 100K steps").
PAPER_STEPS = 100_000

#: Fig. 4's end-of-training validation losses on OpenWebText after ``PAPER_STEPS`` steps (caption of Fig. 4; the
#: 355M panel names AdamW "Adam"). Keyed by this project's model config names.
PAPER_VAL_LOSS: dict[str, dict[str, float]] = {
    "gpt2_small": {"adamw": 2.921, "lion": 2.924, "sophia_h": 2.901, "sophia_g": 2.875},   # Fig. 4a, 125M
    "gpt2_medium": {"adamw": 2.691, "lion": 2.678, "sophia_h": 2.645, "sophia_g": 2.627},  # Fig. 4b, 355M
    "gpt2_large": {"adamw": 2.613, "sophia_h": 2.554, "sophia_g": 2.524},                  # Fig. 4c, 770M
}

#: Fig. 4d/e: GPT NeoX 1.5B and 6.6B on the Pile, models and data this project has no config for (its gpt2_xl
#: is the 1.5B GPT-2, a different model on different data), kept for reference only.
PAPER_NEOX_VAL_LOSS: dict[str, dict[str, float]] = {
    "neox_1.5b": {"adamw": 2.250, "sophia_g": 2.218},  # Fig. 4d
    "neox_6.6b": {"adamw": 1.992, "sophia_g": 1.969},  # Fig. 4e
}


@dataclass(frozen=True)
class PaperStepCost:
    """One row of the paper's Table 1 (A100 GPUs): seconds per step, of which in the Hessian estimate, and
    the compute per step in TFLOPs (counted as Chowdhery et al. 2022 do)."""

    step_s: float
    hessian_s: float
    tflops: float


#: Table 1: wall-clock time and compute per step at the paper's batch (480 x 1024 tokens). Sophia's step is 4.6-6.2%
#: slower than AdamW's here (Sec. 3.3's text says "less than 5%").
PAPER_STEP_COST: dict[str, dict[str, PaperStepCost]] = {
    "gpt2_large": {"adamw": PaperStepCost(3.25, 0.0, 2550), "sophia_h": PaperStepCost(3.40, 0.12, 2708),
                   "sophia_g": PaperStepCost(3.42, 0.17, 2678)},
    "gpt2_medium": {"adamw": PaperStepCost(1.77, 0.0, 1195), "sophia_h": PaperStepCost(1.88, 0.09, 1249),
                    "sophia_g": PaperStepCost(1.86, 0.09, 1255)},
}

#: The data the paper's GPT-2 results are on (``data.name``) and its batch: 480 sequences of 1024 tokens (Sec. 3.1).
PAPER_DATA = "openwebtext"
PAPER_TOKENS_PER_STEP = 480 * 1024


def paper_val_loss(model: str, optim: str) -> float | None:
    """Fig. 4's final validation loss for (model, optimizer) at ``PAPER_STEPS`` steps, or None where it has none."""
    return PAPER_VAL_LOSS.get(model, {}).get(optim)


def paper_comparison(model: str, optim: str, final_val: float, step: int, data: str,
                     tokens_per_step: int = PAPER_TOKENS_PER_STEP) -> str:
    """One line setting a run's final val loss beside the paper's for its (model, optimizer) cell, with what
    makes the two not comparable (other steps, data or batch) said in the same line."""
    ref = paper_val_loss(model, optim)
    if ref is None:
        cells = "; ".join(f"{m}: {', '.join(row)}" for m, row in PAPER_VAL_LOSS.items())
        return f"paper: no Fig. 4 result for optim={optim} on model={model} (it has {cells})"
    line = f"paper: {ref:.3f} at {PAPER_STEPS // 1000}K steps, this run: {final_val:.3f} at step {step:,}, difference {final_val - ref:+.3f}"
    caveats = []
    if step != PAPER_STEPS:
        caveats.append(f"this run stopped at {step:,} of the paper's {PAPER_STEPS:,} steps")
    if data != PAPER_DATA:
        caveats.append(f"its data is {data}, the paper's {PAPER_DATA}")
    if tokens_per_step != PAPER_TOKENS_PER_STEP:
        caveats.append(f"its batch is {tokens_per_step:,} tokens per step, the paper's {PAPER_TOKENS_PER_STEP:,}")
    return line + (f" (not comparable: {'; '.join(caveats)})" if caveats else "")
