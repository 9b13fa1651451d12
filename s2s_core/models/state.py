"""What every model family shares: the encoder output, the decoder-state protocol, small helpers.

Shapes: B batch, S source length, T target length, D model width, V vocabulary, N selected positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from s2s_core.tokenizer import PAD_ID


@dataclass
class EncoderOutput:
    """The encoded source, as the decoder consumes it."""

    states: Tensor
    """(B, S, D) encoder output; rows at padded positions hold no meaning."""
    padding_mask: Tensor
    """(B, S) bool, True at source padding (PAD_ID)."""


class DecoderState(Protocol):
    """Incremental decoding state of one batch; `decode_step` updates it in place."""

    def reorder(self, indices: Tensor, same_sources: bool = False) -> None:
        """Keep row `indices[i]` as row i of every cached tensor: (B',) long, B' may differ from B.

        `same_sources` promises that row i's new source equals its old one (beams of one
        sentence swapping places), so tensors that depend on the source only are left alone.
        """


class Seq2SeqModel(Protocol):
    """What the generator needs of a model (every family provides it)."""

    decoder_start_id: int
    """The token the decoder starts from (BOS for ours; the checkpoint's for imported models)."""

    def encode(self, src: Tensor) -> EncoderOutput:
        """(B, S) source ids -> the encoded source."""
        ...

    def init_state(self, encoder_out: EncoderOutput) -> Any:
        """A fresh decoder state (a `DecoderState`) for the batch."""
        ...

    def decode_hidden(self, prev_token: Tensor, state: Any) -> Tensor:
        """(B,) previous token ids -> (B, D) decoder output; updates `state` in place."""
        ...

    def project(self, hidden: Tensor) -> Tensor:
        """(N, D) decoder outputs -> (N, V) logits."""
        ...


def source_padding(src_tokens: Tensor) -> Tensor:
    """(B, S) token ids -> (B, S) bool, True at padding."""
    return src_tokens.eq(PAD_ID)


def new_embedding(vocab_size: int, dim: int) -> nn.Embedding:
    """A (vocab_size, dim) table with N(0, dim^-0.5) entries and a zero, gradient-free PAD row.

    The dim^-0.5 scale keeps logits of a tied output projection near unit variance.
    """
    embedding = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
    nn.init.normal_(embedding.weight, mean=0.0, std=dim**-0.5)
    with torch.no_grad():
        embedding.weight[PAD_ID].zero_()
    return embedding


def init_linear(layer: nn.Linear) -> None:
    """Xavier-uniform weight, zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def select_outputs(hidden: Tensor, output_mask: Tensor | None) -> Tensor:
    """(B, T, D) with (B, T) bool -> (N, D), the True positions in row-major order; no mask: unchanged.

    Models call this before the vocabulary projection, the most expensive matmul of a training
    step, so padded positions never reach it.
    """
    return hidden if output_mask is None else hidden[output_mask]


def select_rows(tensor: Tensor, indices: Tensor) -> Tensor:
    """Rows `indices` of dim 0: (B, ...) with (B',) -> (B', ...)."""
    return tensor.index_select(0, indices)
