"""The Sophia paper's per-model settings that configs look up: Table 2's peak LRs and Sec. 3.4's
attention scaling (used as Hydra resolvers by ``configs/experiment/paper.yaml``)."""

from __future__ import annotations

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
