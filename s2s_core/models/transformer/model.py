"""The Transformer encoder-decoder (Vaswani et al. 2017), pre-norm by default, with incremental decoding.

The options that imported models need (learned or differently laid out positions, an embedding
LayerNorm, a logits bias, another decoder start token) default to our own architecture, whose
parameter names they leave unchanged; each adds its own tensors only when set.

Shapes: B batch, S source length, T target length, D model width, V target vocabulary,
N positions selected by an output mask, H heads, Dh head width.
Padding (PAD_ID) must be on the right of source and target rows: positions count from 0 at
the first token, and decoder self-attention relies on the causal mask alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s2s_core.models.config import TransformerConfig
from s2s_core.models.state import EncoderOutput, new_embedding, select_outputs, select_rows, source_padding
from s2s_core.models.transformer.layers import DecoderLayer, EncoderLayer, LayerCache
from s2s_core.models.transformer.positions import fixed_positions, sinusoidal_positions

__all__ = ["TransformerDecoderState", "TransformerModel", "attention_mask", "sinusoidal_positions"]


@dataclass
class TransformerDecoderState:
    """Everything `decode_step` needs; it extends the self-attention caches and `step` in place."""

    layers: list[LayerCache]
    """Per decoder layer: growing self-attention K/V and the cross-attention K/V of the source."""
    memory_mask: Tensor
    """(N, 1, 1, S) bool, True at real source tokens (the SDPA mask for cross-attention); one row
    per `group` rows."""
    step: int = 0
    """Target tokens decoded so far: the position of the next one."""
    spare: Tensor | None = None
    """A self-attention buffer free for the next reorder (layers hand theirs on in turn)."""
    group: int = 1
    """Consecutive rows per row of the source-side tensors (the beams of a sentence share one)."""

    def reorder(self, indices: Tensor, same_sources: bool = False) -> None:
        """Keep rows `indices` (B',) of every cached tensor (beam expansion and reordering);
        `same_sources`: row i keeps its source, so the source-side tensors stay as they are.

        The source-side tensors (cross-attention K/V, mask) keep one row per source when the
        new rows come in equal groups of consecutive rows with one source each (the beams of
        a sentence), else one row per row."""
        for cache in self.layers:
            self.spare = cache.reorder(indices, self.spare)
        if same_sources:
            return
        sources = indices // self.group  # (B',) the source row of each new row
        self.group, sources = _grouped(sources)
        for cache in self.layers:
            cache.cross_keys = select_rows(cache.cross_keys, sources)
            cache.cross_values = select_rows(cache.cross_values, sources)
        self.memory_mask = select_rows(self.memory_mask, sources)

    def reserve(self, steps: int) -> None:
        """Room for `steps` decoded tokens in the self-attention caches (else they grow as needed)."""
        for cache in self.layers:
            cache.capacity = steps


def _grouped(sources: Tensor) -> tuple[int, Tensor]:
    """(B',) source row of each row -> (G, the (B' / G,) source of each group) when the rows come
    in groups of G consecutive rows with the same source; else (1, sources)."""
    rows = sources.shape[0]
    differ = (sources != sources[:1]).nonzero()
    group = int(differ[0, 0]) if differ.numel() else rows
    if group <= 1 or rows % group or not bool((sources.view(-1, group) == sources[::group, None]).all()):
        return 1, sources
    return group, sources[::group]


def attention_mask(padding_mask: Tensor) -> Tensor:
    """(B, S) bool True at pads -> (B, 1, 1, S) bool True where attention is allowed."""
    return ~padding_mask[:, None, None, :]


class TransformerModel(nn.Module):
    """Encoder-decoder Transformer; see `s2s_core.models` for the interface every family shares."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.d_model
        self.src_embedding = new_embedding(config.src_vocab_size, dim)
        # Shared/tied tables are registered once, so the state dict has no aliased tensors
        # (safetensors refuses those) and parameters() counts each table once.
        self.tgt_embedding = None if config.share_embeddings else new_embedding(config.tgt_vocab_size, dim)
        self.output_weight = None if config.tie_output else nn.Parameter(
            torch.randn(config.tgt_vocab_size, dim) * dim**-0.5)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        # Pre-norm leaves the residual stream unnormalised, so each stack ends with a LayerNorm.
        final_norm = config.has_final_norm()
        self.encoder_norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.packed_projection: nn.Module | None = None
        """Set only by `s2s_core.models.inference.pack_for_cpu_inference` (inference speed-up)."""
        self.embed_scale = math.sqrt(dim) if config.scale_embeddings else 1.0
        self.decoder_start_id = config.decoder_start_id
        """The decoder's first input token (the generator starts every hypothesis with it)."""
        self._init_positions(config)
        self.src_embedding_norm = nn.LayerNorm(dim) if config.embedding_norm else None
        self.tgt_embedding_norm = nn.LayerNorm(dim) if config.embedding_norm else None
        self.output_bias: Tensor | None
        # A buffer, as Hugging Face's final_logits_bias: it is loaded and saved, never trained.
        self.register_buffer("output_bias", torch.zeros(config.tgt_vocab_size) if config.output_bias else None)

    def _init_positions(self, config: TransformerConfig) -> None:
        """A fixed table shared by both stacks (buffer `positions`, not saved: it is a formula), or
        one learned (offset + max_positions, D) table per stack (`src_positions`, `tgt_positions`)."""
        self.positions: Tensor
        self.src_positions: nn.Parameter | None = None
        self.tgt_positions: nn.Parameter | None = None
        rows, dim = config.max_positions + config.position_offset, config.d_model
        if config.positions == "learned":
            self.src_positions = nn.Parameter(torch.randn(rows, dim) * dim**-0.5)
            self.tgt_positions = nn.Parameter(torch.randn(rows, dim) * dim**-0.5)
            return
        table = fixed_positions(config.positions, config.max_positions, dim, config.position_offset)
        self.register_buffer("positions", table, persistent=False)

    def forward(self, src_tokens: Tensor, prev_tokens: Tensor, output_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits: src (B, S), prev (B, T) -> (B, T, V); with a (B, T) bool
        `output_mask`, only its True positions, row-major: (N, V)."""
        hidden = self.decode(prev_tokens, self.encode(src_tokens))
        return self.project(select_outputs(hidden, output_mask))

    def encode(self, src_tokens: Tensor) -> EncoderOutput:
        """(B, S) token ids -> states (B, S, D) and the source padding mask (B, S)."""
        padding = source_padding(src_tokens)
        mask = attention_mask(padding)
        x = self._embed(src_tokens, start=0, source=True)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return EncoderOutput(states=self.encoder_norm(x), padding_mask=padding)

    def decode(self, prev_tokens: Tensor, encoder_out: EncoderOutput) -> Tensor:
        """All target positions at once: prev (B, T) -> decoder output (B, T, D), before the projection."""
        mask = attention_mask(encoder_out.padding_mask)
        x = self._embed(prev_tokens, start=0, source=False)
        for layer in self.decoder_layers:
            x = layer(x, encoder_out.states, mask)
        return self.decoder_norm(x)

    def project(self, hidden: Tensor) -> Tensor:
        """(..., D) decoder output -> (..., V) logits."""
        if self.packed_projection is not None:
            return self.packed_projection(hidden)
        return F.linear(hidden, self.output_matrix(), self.output_bias)

    def output_matrix(self) -> Tensor:
        """(V, D) output projection: the target embedding when tied."""
        return self.target_embedding.weight if self.output_weight is None else self.output_weight

    def init_state(self, encoder_out: EncoderOutput) -> TransformerDecoderState:
        """A fresh state: empty self-attention caches, cross-attention K/V computed once here."""
        caches = [layer.new_cache(encoder_out.states) for layer in self.decoder_layers]  # type: ignore[operator]  # nn.Module.__getattr__ hides the type
        return TransformerDecoderState(layers=caches, memory_mask=attention_mask(encoder_out.padding_mask))

    def decode_step(self, prev_token: Tensor, state: TransformerDecoderState) -> Tensor:
        """(B,) previous token ids -> (B, V) logits of the next token; updates `state` in place."""
        return self.project(self.decode_hidden(prev_token, state))

    def decode_hidden(self, prev_token: Tensor, state: TransformerDecoderState) -> Tensor:
        """`decode_step` before the vocabulary projection: (B,) -> (B, D); updates `state`."""
        x = self._embed(prev_token[:, None], start=state.step, source=False)
        for layer, cache in zip(self.decoder_layers, state.layers):
            x = layer.step(x, cache, state.memory_mask)  # type: ignore[operator]  # nn.Module.__getattr__ hides the type
        state.step += 1
        return self.decoder_norm(x[:, 0])

    @property
    def target_embedding(self) -> nn.Embedding:
        return self.src_embedding if self.tgt_embedding is None else self.tgt_embedding

    def position_table(self, source: bool) -> Tensor:
        """(max_positions, D): row p is what position p adds to the source (or target) stack."""
        learned = self.src_positions if source else self.tgt_positions
        if learned is None:
            return self.positions
        return learned[self.config.position_offset:]

    def _embed(self, tokens: Tensor, start: int, source: bool) -> Tensor:
        """(B, T) ids at positions start.. -> (B, T, D): scaled embeddings plus positions, then the
        embedding LayerNorm (if any) and dropout.

        Raises:
            ValueError: if the positions run past `max_positions`.
        """
        positions = self.position_table(source)
        end = start + tokens.shape[1]
        if end > positions.shape[0]:
            raise ValueError(f"sequence of {end} tokens is longer than max_positions ({positions.shape[0]})")
        x = (self.src_embedding if source else self.target_embedding)(tokens)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        x = x + positions[start:end]
        norm = self.src_embedding_norm if source else self.tgt_embedding_norm
        return self.dropout(x if norm is None else norm(x))
