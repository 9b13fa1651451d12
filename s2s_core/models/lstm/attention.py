"""Attention for the LSTM decoder: additive (Bahdanau), bilinear (Luong general) or dot (Luong dot).

Shapes: B batch, S source length, H hidden size (the encoder output is H wide too).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s_core.models.state import init_linear


class AdditiveScore(nn.Module):
    """Bahdanau's score v^T tanh(k + W_q q); the keys k arrive already projected (W_k h)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)
        init_linear(self.query_proj)
        init_linear(self.v)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        """query (B, H), keys (B, S, H) -> scores (B, S)."""
        return self.v(torch.tanh(keys + self.query_proj(query)[:, None, :])).squeeze(2)


class LSTMAttention(nn.Module):
    """Scores a decoder query against encoder states and returns their weighted sum.

    The key-side projection does not depend on the decoder, so `project_keys` runs once per
    source (in `init_state`), not once per decoding step.
    """

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.additive = AdditiveScore(hidden) if kind == "bahdanau" else None
        # Luong dot compares the states themselves; the other two project them first.
        self.key_proj = None if kind == "luong-dot" else nn.Linear(hidden, hidden, bias=False)
        if self.key_proj is not None:
            init_linear(self.key_proj)

    def project_keys(self, states: Tensor) -> Tensor:
        """(B, S, H) encoder states -> (B, S, H) keys (the states themselves for Luong dot)."""
        return states if self.key_proj is None else self.key_proj(states)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, padding_mask: Tensor) -> Tensor:
        """query (B, H), keys/values (B, S, H), padding_mask (B, S) True at pads -> context (B, H)."""
        if self.additive is not None:
            scores = self.additive(query, keys)
        else:  # multiplicative: k . q (k = W h for Luong general, h for Luong dot)
            scores = torch.bmm(keys, query[:, :, None]).squeeze(2)
        weights = torch.softmax(scores.masked_fill(padding_mask, float("-inf")), dim=1)  # (B, S)
        return torch.bmm(weights[:, None, :], values).squeeze(1)
