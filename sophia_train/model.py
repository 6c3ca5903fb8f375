"""GPT-2 language model, nanoGPT-shaped: pre-LN blocks, GELU MLP, tied embeddings, no bias.

Attention goes through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where
the device has them). ``attn_scale_by_layer`` divides the attention logits of layer ``l`` (1-based)
by an extra factor ``l`` — the re-parameterisation the Sophia paper applies to AdamW and Lion on
large models (Sec. 3.4, Fig. 6b).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sophia_train.errors import ConfigError


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n`` (``n`` itself for a multiple of 0 or 1)."""
    return n if multiple <= 1 else -(-n // multiple) * multiple


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (bf16 logits -> fp32 for the loss; fp64 stays fp64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@dataclass
class GPTConfig:
    """Shape of a GPT-2 model."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304
    dropout: float = 0.0
    bias: bool = False
    attn_scale_by_layer: bool = False
    activation: str = "gelu"  # MLP non-linearity: gelu (exact, nanoGPT) | gelu_tanh (GPT-2's "gelu_new")


ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # name -> F.gelu's ``approximate``


def gpt_config(m, dataset_vocab: int, data_name: str = "") -> GPTConfig:
    """The shape a model config (``config.ModelConfig``) asks for; the vocabulary comes from the dataset
    (padded to ``pad_vocab_to``) unless ``vocab_size`` is set."""

    vocab = m.vocab_size if m.vocab_size is not None else round_up(dataset_vocab, m.pad_vocab_to)
    if vocab < dataset_vocab:
        raise ConfigError(
            f"model.vocab_size={vocab} is smaller than the vocabulary of dataset {data_name!r} ({dataset_vocab}); "
            f"leave model.vocab_size unset to take it from the data."
        )
    shape = {f.name: getattr(m, f.name) for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"}
    return GPTConfig(**shape, vocab_size=vocab)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over the fused-QKV projection."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        head_dim = config.n_embd // config.n_head
        # Softmax temperature: 1/sqrt(d) by default, 1/(sqrt(d) * (layer_idx + 1)) with the trick.
        self.scale = 1.0 / math.sqrt(head_dim)
        if config.attn_scale_by_layer:
            self.scale /= layer_idx + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True, scale=self.scale
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network with a 4x hidden width."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=ACTIVATIONS[config.activation])
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 decoder. ``forward(idx, targets)`` returns ``(logits, loss)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2 scaled init of the residual projections.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are excluded when ``non_embedding`` (nanoGPT's rule)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        full_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and mean cross-entropy loss.

        With ``targets`` the logits cover every position. Without them only the last position is
        computed (cheap generation), unless ``full_logits=True`` — the curvature hooks need all.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds the model's block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None or full_logits:
            logits = self.lm_head(x)
        else:
            logits = self.lm_head(x[:, [-1], :])
        loss = None
        if targets is not None:
            loss = F.cross_entropy(upcast(logits.view(-1, logits.size(-1))), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def flops_per_token(self) -> float:
        """Training FLOPs per token (6N + attention), the PaLM appendix-B estimate used for MFU."""
        cfg = self.config
        n = self.num_params()
        head_dim = cfg.n_embd // cfg.n_head
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * head_dim * cfg.block_size

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 vocab_limit: int | None = None):
        """Sample ``max_new_tokens`` continuations of ``idx`` autoregressively; ``vocab_limit`` keeps the
        padding ids of the embedding (ids the tokenizer cannot decode) from being drawn."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :vocab_limit] / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def parameter_count(config: GPTConfig) -> int:
    """Every parameter of ``GPT(config)``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(config).parameters())
