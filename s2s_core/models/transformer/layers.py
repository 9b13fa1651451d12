"""Transformer building blocks: attention (all through SDPA), feed-forward, encoder and decoder layers.

Shapes: B batch, S source length, T target length (1 in a decoding step), t cached steps,
D = H * Dh model width, H heads, Dh head width, F feed-forward width.
Attention masks follow `scaled_dot_product_attention`: bool, True where a query may attend.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s_core.models.config import TransformerConfig
from s2s_core.models.state import init_linear


@dataclass
class LayerCache:
    """One decoder layer's incremental state.

    The self-attention keys and values live in one preallocated buffer: a step writes its own in
    place and a reorder copies the cache once (into a spare buffer that the caller recycles),
    where growing tensors by concatenation would copy them twice per step.
    """

    cross_keys: Tensor
    """(N, H, S, Dh) keys of the encoder output, computed once per source; N divides B, and each
    group of B / N consecutive rows shares one (`TransformerDecoderState.reorder`)."""
    cross_values: Tensor
    """(N, H, S, Dh) values of the encoder output."""
    steps: Tensor | None = None
    """(B*, H, 2, capacity, Dh): keys ([:, :, 0]) and values ([:, :, 1]) of the decoded tokens, in
    rows :rows and steps :length (B* >= rows); None until the first step."""
    rows: int = 0
    length: int = 0
    """Tokens decoded so far."""
    capacity: int = 0
    """Steps to allocate room for at once (a hint: the buffer grows when a step needs more)."""

    @property
    def self_keys(self) -> Tensor:
        """(B, H, t, Dh) keys of the t tokens decoded so far (a view of the buffer)."""
        return self._view(0)

    @property
    def self_values(self) -> Tensor:
        """(B, H, t, Dh) values, as `self_keys`."""
        return self._view(1)

    def _view(self, part: int) -> Tensor:
        if self.steps is None:
            batch, heads, _, head_dim = self.cross_keys.shape
            return self.cross_keys.new_empty(self.rows or batch, heads, 0, head_dim)
        return self.steps[: self.rows, :, part, : self.length]

    def append(self, step: Tensor) -> tuple[Tensor, Tensor]:
        """step (B, H, 2, Dh): the new token's key and value -> keys, values (B, H, t + 1, Dh)."""
        batch, heads, _, head_dim = step.shape
        steps = self.steps
        if steps is None or steps.shape[0] < batch or steps.shape[3] <= self.length:
            room = max(self.capacity, 2 * self.length, self.length + 1, 16)
            grown = step.new_empty(batch, heads, 2, room, head_dim)
            if steps is not None and self.length:
                grown[:, :, :, : self.length] = steps[:batch, :, :, : self.length]
            self.steps = steps = grown
        steps[:batch, :, :, self.length] = step
        self.rows, self.length = batch, self.length + 1
        return self.self_keys, self.self_values

    def reorder(self, indices: Tensor, spare: Tensor | None = None) -> Tensor | None:
        """Keep rows `indices` (B',) of the self-attention cache (the caller selects the cross-
        attention tensors). It is copied into `spare` (a buffer of another layer's shape; None or
        too small: a new one), and the buffer it leaves is returned for the next layer."""
        rows = indices.shape[0]
        steps = self.steps
        if steps is not None and self.length:
            if spare is None or spare.shape[0] < rows or spare.shape[1:] != steps.shape[1:]:
                spare = steps.new_empty((rows, *steps.shape[1:]))
            kept, into = steps[: self.rows, :, :, : self.length], spare[:rows, :, :, : self.length]
            if kept.requires_grad:  # out= has no autograd: a temporary (never in inference)
                into.copy_(kept.index_select(0, indices))
            else:
                torch.index_select(kept, 0, indices, out=into)
            self.steps, spare = spare, steps
        elif steps is not None and steps.shape[0] < rows:
            self.steps = None  # nothing cached yet: the first step allocates room for the new rows
        self.rows = rows
        return spare


class Attention(nn.Module):
    """Multi-head attention core (head split, SDPA, output projection); subclasses own the input
    projections: fused QKV for self-attention, Q plus fused KV for cross-attention."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.out = nn.Linear(dim, dim)
        init_linear(self.out)

    def split_heads(self, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        """(B, T, parts*D) -> `parts` views of (B, H, T, Dh); no copy (SDPA takes strided inputs)."""
        batch, length, _ = x.shape
        return x.view(batch, length, parts, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool = False) -> Tensor:
        """q (B, H, T, Dh), k/v (B, H, S, Dh), mask broadcastable to (B, H, T, S) -> (B, T, D)."""
        if q.shape[2] == 1 and not self.training:
            out = _single_query_attention(q, k, v, mask)
        else:
            p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        batch, heads, length, head_dim = out.shape
        return self.out(out.transpose(1, 2).reshape(batch, length, heads * head_dim))


def _single_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """q (B, H, G, Dh) over k/v (B, H, S, Dh) -> (B, H, G, Dh): a decoding step's attention (G
    queries: the beams of one sentence sharing its source).

    Two small batched matmuls beat SDPA's CPU kernel here (measured 25-35% faster at decoding
    shapes), which is built for many queries at once.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, 1, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _init_fused(layer: nn.Linear, parts: int) -> None:
    """Xavier per part, so the fused projection starts like `parts` separate (D, D) ones."""
    for chunk in layer.weight.data.chunk(parts, dim=0):
        nn.init.xavier_uniform_(chunk)
    nn.init.zeros_(layer.bias)


class SelfAttention(Attention):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__(dim, heads, dropout)
        self.qkv = nn.Linear(dim, 3 * dim)
        _init_fused(self.qkv, 3)

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """(B, T, D) -> (B, T, D); `mask` (B, 1, 1, T) for key padding, `causal` for the decoder."""
        q, k, v = self.split_heads(self.qkv(x), 3)
        return self.attend(q, k, v, mask, causal)

    def step(self, x: Tensor, cache: LayerCache) -> Tensor:
        """(B, 1, D) -> (B, 1, D) attending to every cached step and itself; extends the cache."""
        parts = self.qkv(x).view(x.shape[0], 3, self.heads, -1)  # (B, 3, H, Dh): q, k, v
        keys, values = cache.append(parts[:, 1:].transpose(1, 2))
        # One query over all earlier keys: no future exists yet, so no causal mask is needed.
        return self.attend(parts[:, 0, :, None], keys, values, None)


class CrossAttention(Attention):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__(dim, heads, dropout)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        init_linear(self.q)
        _init_fused(self.kv, 2)

    def keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, D) encoder states -> keys, values (B, H, S, Dh)."""
        k, v = self.split_heads(self.kv(memory), 2)
        return k, v

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """(B, T, D) queries over (B, H, S, Dh) keys/values; mask (B, 1, 1, S) -> (B, T, D)."""
        (q,) = self.split_heads(self.q(x), 1)
        return self.attend(q, keys, values, mask)

    def step(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """A decoding step: (B, 1, D) queries over keys/values (N, H, S, Dh) and mask (N, 1, 1, S)
        shared by each group of B / N consecutive rows (the beams of a sentence) -> (B, 1, D).
        A group's queries go through its source's keys together: B / N times fewer, larger matmuls."""
        if self.training or keys.shape[0] == x.shape[0]:
            return self.forward(x, keys, values, mask)
        batch, sources = x.shape[0], keys.shape[0]
        q = self.q(x).view(sources, batch // sources, self.heads, -1).transpose(1, 2)  # (N, H, G, Dh)
        out = _single_query_attention(q, keys, values, mask).transpose(1, 2)  # (N, G, H, Dh)
        return self.out(out.reshape(batch, 1, -1))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu-tanh": partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
}
"""Feed-forward activations by `TransformerConfig.activation` name."""


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.activation = ACTIVATIONS[activation]
        init_linear(self.inner)
        init_linear(self.outer)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, F) -> (B, T, D)."""
        return self.outer(self.activation(self.inner(x)))


class Residual(nn.Module):
    """Dropout + residual sum + LayerNorm around one sublayer, in pre- or post-norm order."""

    def __init__(self, dim: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(dim), nn.Dropout(dropout), pre_norm

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        if self.pre_norm:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        dim, pre = config.d_model, config.norm == "pre"
        self.attention = SelfAttention(dim, config.heads, config.attention_dropout)
        self.ffn = FeedForward(dim, config.ffn_dim, config.activation)
        self.attention_block = Residual(dim, config.dropout, pre)
        self.ffn_block = Residual(dim, config.dropout, pre)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, S, D) with key mask (B, 1, 1, S) -> (B, S, D)."""
        x = self.attention_block(x, lambda h: self.attention(h, mask))
        return self.ffn_block(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        dim, pre = config.d_model, config.norm == "pre"
        self.self_attention = SelfAttention(dim, config.heads, config.attention_dropout)
        self.cross_attention = CrossAttention(dim, config.heads, config.attention_dropout)
        self.ffn = FeedForward(dim, config.ffn_dim, config.activation)
        self.self_block = Residual(dim, config.dropout, pre)
        self.cross_block = Residual(dim, config.dropout, pre)
        self.ffn_block = Residual(dim, config.dropout, pre)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """(B, T, D) over encoder states (B, S, D) with mask (B, 1, 1, S) -> (B, T, D).

        Self-attention is causal only: target padding is on the right, so a real position never
        sees a pad (pads sit after it), and the fast `is_causal` path needs no mask tensor.
        """
        keys, values = self.cross_attention.keys_values(memory)
        x = self.self_block(x, lambda h: self.self_attention(h, causal=True))
        x = self.cross_block(x, lambda h: self.cross_attention(h, keys, values, memory_mask))
        return self.ffn_block(x, self.ffn)

    def step(self, x: Tensor, cache: LayerCache, memory_mask: Tensor) -> Tensor:
        """(B, 1, D) -> (B, 1, D) for the next position, using and extending `cache`."""
        x = self.self_block(x, lambda h: self.self_attention.step(h, cache))
        x = self.cross_block(x, lambda h: self.cross_attention.step(h, cache.cross_keys, cache.cross_values, memory_mask))
        return self.ffn_block(x, self.ffn)

    def new_cache(self, memory: Tensor) -> LayerCache:
        """An empty self-attention cache plus this layer's cross keys/values of (B, S, D) `memory`."""
        keys, values = self.cross_attention.keys_values(memory)
        return LayerCache(cross_keys=keys, cross_values=values, rows=keys.shape[0])
