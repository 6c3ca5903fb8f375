"""GPT model structure and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sophia_train.model import GPT, GPTConfig
from sophia_train.schedule import lr_at


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32), **kw}))


def test_forward_shapes_and_tied_embeddings():
    m = small()
    x = torch.randint(0, 32, (3, 8))
    logits, loss = m(x, x)
    assert logits.shape == (3, 8, 32) and loss.ndim == 0
    assert m(x)[0].shape == (3, 1, 32)
    assert m(x, full_logits=True)[0].shape == (3, 8, 32)
    assert m.lm_head.weight is m.transformer.wte.weight
    assert all(not hasattr(mod, "bias") or mod.bias is None for mod in m.modules() if isinstance(mod, torch.nn.Linear))


def test_attention_is_causal():
    m = small().eval()
    x = torch.randint(0, 32, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 32
    a, _ = m(x, full_logits=True)
    b, _ = m(y, full_logits=True)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_attention_scale_by_layer_index_matches_explicit_softmax():
    """Layer l (1-based) uses softmax(q k^T / (sqrt(d) * l)) (Sophia paper Sec. 3.4)."""
    m = small(attn_scale_by_layer=True, n_layer=3).double()
    for idx, block in enumerate(m.transformer.h):
        attn = block.attn
        x = torch.randn(2, 8, 16, dtype=torch.float64)
        q, k, v = attn.c_attn(x).split(16, dim=2)
        q, k, v = (t.view(2, 8, 2, 8).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / (math.sqrt(8) * (idx + 1))
        scores = scores.masked_fill(torch.triu(torch.ones(8, 8, dtype=torch.bool), 1), float("-inf"))
        y = (F.softmax(scores, -1) @ v).transpose(1, 2).reshape(2, 8, 16)
        torch.testing.assert_close(attn(x), attn.c_proj(y))


def test_sequence_longer_than_block_is_refused():
    with pytest.raises(ValueError, match="exceeds the model's block_size"):
        small()(torch.zeros(1, 9, dtype=torch.long))


def test_schedule_warmup_cosine_floor():
    peak, warm, total = 1e-3, 10, 110
    assert lr_at(0, peak, warm, total) == pytest.approx(peak / warm)
    assert lr_at(9, peak, warm, total) == pytest.approx(peak)
    assert lr_at(10, peak, warm, total) == pytest.approx(peak)
    assert lr_at(60, peak, warm, total) == pytest.approx(0.05 * peak + 0.5 * 0.95 * peak)
    assert lr_at(110, peak, warm, total) == pytest.approx(0.05 * peak)
    assert lr_at(500, peak, warm, total) == pytest.approx(0.05 * peak)
    lrs = [lr_at(s, peak, warm, total) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
