"""Attentional LSTM encoder-decoder (Bahdanau et al. 2015 / Luong et al. 2015) with input feeding.

Shapes: B batch, S source length, T target length, E embedding width, H hidden size,
L layers, V target vocabulary, N positions selected by an output mask.
The encoder is a bidirectional LSTM with H/2 units per direction, so its states are H wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s_core.models.config import LSTMConfig
from s2s_core.models.lstm.attention import LSTMAttention
from s2s_core.models.state import (
    EncoderOutput,
    init_linear,
    new_embedding,
    select_outputs,
    select_rows,
    source_padding,
)
from s2s_core.tokenizer import BOS_ID


@dataclass
class LSTMEncoderOutput(EncoderOutput):
    """The encoder output plus the final LSTM states the decoder starts from."""

    final_hidden: Tensor
    """(L, B, H) last hidden state of each layer, forward and backward directions concatenated."""
    final_cell: Tensor
    """(L, B, H) last cell state of each layer, directions concatenated."""


@dataclass
class LSTMDecoderState:
    """Everything `decode_step` needs; it replaces `hidden`, `cell` and `feed` in place."""

    hidden: list[Tensor]
    """Per layer (B, H) hidden state."""
    cell: list[Tensor]
    """Per layer (B, H) cell state."""
    feed: Tensor
    """(B, H) previous attentional output, fed back with the next input (input feeding)."""
    keys: Tensor
    """(B, S, H) encoder states projected for attention scoring (computed once per source)."""
    values: Tensor
    """(B, S, H) encoder states, averaged by the attention weights."""
    padding_mask: Tensor
    """(B, S) bool, True at source padding."""

    def reorder(self, indices: Tensor, same_sources: bool = False) -> None:
        """Keep rows `indices` (B',) of every tensor (beam expansion and reordering);
        `same_sources`: row i keeps its source, so the source-side tensors stay as they are."""
        self.hidden = [select_rows(h, indices) for h in self.hidden]
        self.cell = [select_rows(c, indices) for c in self.cell]
        self.feed = select_rows(self.feed, indices)
        if same_sources:
            return
        same = self.keys is self.values  # Luong dot: one tensor, keep it one
        self.values = select_rows(self.values, indices)
        self.keys = self.values if same else select_rows(self.keys, indices)
        self.padding_mask = select_rows(self.padding_mask, indices)


def join_directions(final: Tensor) -> Tensor:
    """(L*2, B, H/2) final states of a bidirectional LSTM -> (L, B, H), [forward; backward] per layer."""
    layers2, batch, half = final.shape
    return final.view(layers2 // 2, 2, batch, half).permute(0, 2, 1, 3).reshape(layers2 // 2, batch, 2 * half)


class LSTMModel(nn.Module):
    """LSTM encoder-decoder; see `s2s_core.models` for the interface every family shares."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder_start_id = BOS_ID
        """The decoder's first input token."""
        emb, hid, layers = config.embed_dim, config.hidden_size, config.layers
        self.src_embedding = new_embedding(config.src_vocab_size, emb)
        # Shared/tied tables are registered once (no aliased tensors in the state dict).
        self.tgt_embedding = None if config.share_embeddings else new_embedding(config.tgt_vocab_size, emb)
        self.encoder = nn.LSTM(emb, hid // 2, num_layers=layers, batch_first=True, bidirectional=True,
                               dropout=config.dropout if layers > 1 else 0.0)
        # The encoder's final states seed the decoder; a learned map lets their scales differ.
        self.bridge_hidden, self.bridge_cell = nn.Linear(hid, hid), nn.Linear(hid, hid)
        self.cells = nn.ModuleList(nn.LSTMCell(emb + hid if i == 0 else hid, hid) for i in range(layers))
        self.attention = LSTMAttention(config.attention, hid)
        self.combine = nn.Linear(2 * hid, hid, bias=False)  # [context; h] -> attentional output
        tied_needs_projection = config.tie_output and emb != hid
        self.output_proj = nn.Linear(hid, emb, bias=False) if tied_needs_projection else None
        self.output_weight = None if config.tie_output else nn.Parameter(
            torch.randn(config.tgt_vocab_size, hid) * hid**-0.5)
        for layer in (self.bridge_hidden, self.bridge_cell, self.combine, self.output_proj):
            if layer is not None:
                init_linear(layer)
        self.dropout = nn.Dropout(config.dropout)
        self.packed_projection: nn.Module | None = None
        """Set only by `s2s_core.models.inference.pack_for_cpu_inference` (inference speed-up)."""

    def forward(self, src_tokens: Tensor, prev_tokens: Tensor, output_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits: src (B, S), prev (B, T) -> (B, T, V); with a (B, T) bool
        `output_mask`, only its True positions, row-major: (N, V)."""
        state = self.init_state(self.encode(src_tokens))
        embedded = self.dropout(self.target_embedding(prev_tokens))  # (B, T, E)
        # Input feeding makes step t depend on step t-1's output: the loop over T is inherent.
        hidden = torch.stack([self._step(x, state) for x in embedded.unbind(1)], dim=1)  # (B, T, H)
        return self.project(select_outputs(hidden, output_mask))

    def encode(self, src_tokens: Tensor) -> LSTMEncoderOutput:
        """(B, S) token ids -> states (B, S, H), padding mask (B, S), final states (L, B, H).

        Every row needs at least one real token (the EOS the batcher appends).
        """
        padding = source_padding(src_tokens)
        lengths = (~padding).sum(dim=1).cpu()  # packing wants lengths on the CPU
        embedded = self.dropout(self.src_embedding(src_tokens))
        # Packing stops each direction at the row's true length, so pads never reach the states.
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, (hidden, cell) = self.encoder(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src_tokens.shape[1])
        return LSTMEncoderOutput(states=states, padding_mask=padding,
                                 final_hidden=join_directions(hidden), final_cell=join_directions(cell))

    def project(self, hidden: Tensor) -> Tensor:
        """(..., H) attentional outputs -> (..., V) logits."""
        if self.output_proj is not None:
            hidden = self.output_proj(hidden)
        if self.packed_projection is not None:
            return self.packed_projection(hidden)
        return F.linear(hidden, self.output_matrix())

    def output_matrix(self) -> Tensor:
        """(V, E or H) output projection: the target embedding when tied."""
        return self.target_embedding.weight if self.output_weight is None else self.output_weight

    def init_state(self, encoder_out: LSTMEncoderOutput) -> LSTMDecoderState:
        """Decoder states from the bridged final encoder states; attention keys computed once here."""
        hidden = torch.tanh(self.bridge_hidden(encoder_out.final_hidden))  # (L, B, H)
        cell = self.bridge_cell(encoder_out.final_cell)
        states = encoder_out.states
        return LSTMDecoderState(
            hidden=list(hidden.unbind(0)), cell=list(cell.unbind(0)),
            feed=states.new_zeros(states.shape[0], states.shape[2]),
            keys=self.attention.project_keys(states), values=states, padding_mask=encoder_out.padding_mask)

    def decode_step(self, prev_token: Tensor, state: LSTMDecoderState) -> Tensor:
        """(B,) previous token ids -> (B, V) logits of the next token; updates `state` in place."""
        return self.project(self.decode_hidden(prev_token, state))

    def decode_hidden(self, prev_token: Tensor, state: LSTMDecoderState) -> Tensor:
        """`decode_step` before the vocabulary projection: (B,) -> (B, H); updates `state`."""
        return self._step(self.dropout(self.target_embedding(prev_token)), state)

    @property
    def target_embedding(self) -> nn.Embedding:
        return self.src_embedding if self.tgt_embedding is None else self.tgt_embedding

    def _step(self, embedded: Tensor, state: LSTMDecoderState) -> Tensor:
        """(B, E) embedded input -> (B, H) attentional output; advances `state`."""
        x = torch.cat([embedded, state.feed], dim=1)  # (B, E + H)
        for i, cell in enumerate(self.cells):
            if i:
                x = self.dropout(x)
            state.hidden[i], state.cell[i] = cell(x, (state.hidden[i], state.cell[i]))
            x = state.hidden[i]
        context = self.attention(x, state.keys, state.values, state.padding_mask)  # (B, H)
        state.feed = self.dropout(torch.tanh(self.combine(torch.cat([context, x], dim=1))))
        return state.feed
