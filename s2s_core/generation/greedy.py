"""Greedy decoding over the incremental-state interface (used for validation BLEU)."""

from __future__ import annotations

import torch

from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID


@torch.no_grad()
def greedy_decode(model: torch.nn.Module, src: torch.Tensor, max_len_a: float = 1.5,
                  max_len_b: int = 10) -> list[list[int]]:
    """Most likely token at each step until EOS or the length limit.

    src: (B, S) padded source ids (with EOS). A row stops at `max_len_a * len + max_len_b`
    tokens (EOS forced there). Returns one list of token ids per row, without BOS/EOS.
    """
    src_lengths = (src != PAD_ID).sum(dim=1)  # (B,)
    limits = (src_lengths.float() * max_len_a).long() + max_len_b  # (B,)
    state = model.init_state(model.encode(src))
    prev = torch.full_like(src_lengths, BOS_ID)  # (B,)
    finished = torch.zeros_like(src_lengths, dtype=torch.bool)
    steps = []
    for t in range(int(limits.max()) + 1):
        logits = model.decode_step(prev, state)  # (B, V)
        logits[:, PAD_ID] = logits[:, BOS_ID] = float("-inf")
        token = logits.argmax(dim=-1)  # (B,)
        token = torch.where(t >= limits, torch.full_like(token, EOS_ID), token)
        token = torch.where(finished, torch.full_like(token, PAD_ID), token)
        steps.append(token)
        finished |= token == EOS_ID
        if bool(finished.all()):
            break
        prev = token
    tokens = torch.stack(steps, dim=1).tolist()  # (B, T)
    return [[i for i in row if i not in (EOS_ID, PAD_ID)] for row in tokens]
