"""Position tables of the Transformer: the sinusoidal layouts of ours and of the model families we
import, and what a stack adds to its token embeddings (`TransformerConfig.positions`).

Shapes: P positions, D model width. Each sinusoidal builder returns a (count, D) float32 table
whose row r encodes position r; a model reads rows from `position_offset` on.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def sinusoidal_positions(count: int, dim: int) -> Tensor:
    """(count, dim) table: sin(p / 10000^(2i/dim)) in even columns, cos in odd ones."""
    half = (dim + 1) // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float64) * (-math.log(10000.0) / half))
    angles = torch.arange(count, dtype=torch.float64)[:, None] * frequencies[None, :]
    table = torch.zeros(count, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)[:, : dim // 2]
    return table.float()


def halves_positions(count: int, dim: int) -> Tensor:
    """(count, dim) table with Marian's layout, as Hugging Face builds it: the sines of
    p / 10000^(2i/dim) in the first ceil(dim/2) columns, the cosines in the rest."""
    sines, cosines = (dim + 1) // 2, dim // 2
    exponents = 2 * torch.arange(sines, dtype=torch.float64) / dim
    angles = torch.arange(count, dtype=torch.float64)[:, None] / torch.pow(10000.0, exponents)[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles[:, :cosines])], dim=1).float()


def fairseq_positions(count: int, dim: int) -> Tensor:
    """(count, dim) table of fairseq (M2M-100, NLLB): sines then cosines of p * 10000^(-i/(h-1))
    with h = dim // 2, computed in float32 as they do; an odd dim gets a zero last column."""
    half = dim // 2
    step = math.log(10000) / max(half - 1, 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)
    angles = torch.arange(count, dtype=torch.int64).float()[:, None] * frequencies[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(count, 1)], dim=1)
    return table


SINUSOIDS: dict[str, Callable[[int, int], Tensor]] = {
    "sinusoidal": sinusoidal_positions,
    "sinusoidal-halves": halves_positions,
    "sinusoidal-fairseq": fairseq_positions,
}
"""Fixed tables by `TransformerConfig.positions` name ("learned" tables are parameters)."""


def fixed_positions(kind: str, max_positions: int, dim: int, offset: int) -> Tensor:
    """(max_positions, dim): rows offset .. offset + max_positions of the `kind` table, so that
    row p is position p."""
    return SINUSOIDS[kind](max_positions + offset, dim)[offset:].contiguous()
