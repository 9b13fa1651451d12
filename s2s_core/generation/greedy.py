"""Greedy decoding of padded id batches (validation BLEU during training)."""

from __future__ import annotations

import torch

from s2s_core.generation.config import GenerationConfig
from s2s_core.generation.generator import Generator


def greedy_decode(model: torch.nn.Module, src: torch.Tensor, max_len_a: float = 1.5,
                  max_len_b: int = 10) -> list[list[int]]:
    """src (B, S) padded source ids (with EOS) -> per row, the most likely token at each step
    until EOS or `max_len_a * length + max_len_b` tokens; ids without BOS/EOS."""
    config = GenerationConfig(beam_size=1, max_len_a=max_len_a, max_len_b=max_len_b, max_length=1 << 20)
    return [hyps[0].tokens for hyps in Generator(model, config).generate(src)]
