"""Our Transformer as a `ctranslate2.specs.TransformerSpec`: the layer-by-layer mapping behind
`s2s_core.export.ct2` (which owns the files, the vocabularies and the checks).

How our Transformer maps onto CTranslate2's (`s2s_core.models.transformer`):
- self-attention: our fused `qkv` projection is CTranslate2's `linear[0]` (rows q, k, v in that
  order, as both expect); cross-attention: `q` -> `linear[0]`, fused `kv` -> `linear[1]`;
  the output projection is `linear[-1]` in both;
- each sublayer's LayerNorm is that sublayer's `layer_norm` there, with the same pre/post-norm
  flag; a stack's final LayerNorm (`final_norm`: pre-norm's by default) is the stack's
  `layer_norm`, and `embedding_norm` is the stack's `layernorm_embedding`;
- positions: every kind is written as the table itself, one per stack, from `position_offset`
  on (row p is what position p adds): our sinusoids interleave sin and cos columns, Marian's
  and fairseq's put them in halves with other frequencies, and CTranslate2's built-in one is
  none of these; learned tables (BART, mBART) are parameters anyway. The table's length also
  sets the longest sequence;
- embeddings are scaled by sqrt(d_model) or not, per config; shared tables and a tied output
  projection are the same arrays, which CTranslate2 stores once;
- `output_bias` (Hugging Face's `final_logits_bias`) is the output projection's bias;
- the decoder's first input is `decoder_start_id`'s token (config.json `decoder_start_token`), a
  zero vector where the export drops that row (`Layout.zero_start`: Marian's PAD, whose
  embedding row is zero), or, where it is a language code (mBART-25), the first token of the
  caller's target prefix (no `decoder_start_token`).
CTranslate2 has no LSTM (refused by `s2s_core.export.ct2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which our models use
ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "gelu-tanh": "GELUTanh", "silu": "SWISH"}
"""Our `TransformerConfig.activation` -> the name of CTranslate2's `common_spec.Activation`."""


@dataclass(frozen=True)
class Layout:
    """Which embedding rows the export writes, in its order (our ids); CTranslate2 numbers the
    tokens of its vocabulary files by this order, and speaks to callers in token strings."""

    source_rows: list[int]
    target_rows: list[int]
    zero_start: bool = False
    """The decoder starts from a zero vector (CTranslate2's `start_from_zero_embedding`) instead of
    the embedding of `decoder_start_id`, whose row is then not exported."""

    @classmethod
    def identity(cls, source_size: int, target_size: int) -> "Layout":
        return cls(list(range(source_size)), list(range(target_size)))


def unsupported(config: Any) -> list[str]:
    """What in `config` CTranslate2's Transformer cannot express, one phrase each."""
    return [] if config.activation in ACTIVATIONS else [f"activation {config.activation}"]


def transformer_spec(model: Any, config: Any, source: list[str], target: list[str], layout: Layout | None = None) -> Any:
    """The `ctranslate2.specs.TransformerSpec` of our Transformer, weights and vocabularies set;
    `source`/`target`: token strings by our id; `layout`: the rows to write (None: all, in our order)."""
    from ctranslate2.specs import common_spec, transformer_spec as specs

    layout = layout or Layout.identity(len(source), len(target))
    final_norm, pre_norm = config.has_final_norm(), config.norm == "pre"
    # The spec declares a stack's final LayerNorm for pre-norm only; CTranslate2 applies one that
    # is there either way, so a post-norm model with one is declared pre-norm, then switched.
    spec = specs.TransformerSpec.from_config(
        (config.encoder_layers, config.decoder_layers), config.heads, pre_norm=pre_norm or final_norm,
        no_final_norm=not final_norm, layernorm_embedding=config.embedding_norm,
        activation=getattr(common_spec.Activation, ACTIVATIONS[config.activation]))
    spec.encoder.pre_norm = spec.decoder.pre_norm = pre_norm
    _set_inputs(spec.encoder, model.src_embedding.weight[layout.source_rows], model.position_table(True),
                config.scale_embeddings, model.src_embedding_norm)
    _set_inputs(spec.decoder, model.target_embedding.weight[layout.target_rows], model.position_table(False),
                config.scale_embeddings, model.tgt_embedding_norm)
    spec.decoder.start_from_zero_embedding = layout.zero_start
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder_layers):
        _set_attention(layer_spec.self_attention, layer.attention, layer.attention_block.norm, fused=[layer.attention.qkv])
        _set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_block.norm)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder_layers):
        _set_attention(layer_spec.self_attention, layer.self_attention, layer.self_block.norm,
                       fused=[layer.self_attention.qkv])
        _set_attention(layer_spec.attention, layer.cross_attention, layer.cross_block.norm,
                       fused=[layer.cross_attention.q, layer.cross_attention.kv])
        _set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_block.norm)
    if final_norm:
        _set_norm(spec.encoder.layer_norm, model.encoder_norm)
        _set_norm(spec.decoder.layer_norm, model.decoder_norm)
    spec.decoder.projection.weight = _numpy(model.output_matrix()[layout.target_rows])
    if model.output_bias is not None:
        spec.decoder.projection.bias = _numpy(model.output_bias[layout.target_rows])
    _set_config(spec, config, target, layout)
    spec.register_source_vocabulary([source[i] for i in layout.source_rows])
    spec.register_target_vocabulary([target[i] for i in layout.target_rows])
    return spec


def _set_config(spec: Any, config: Any, target: list[str], layout: Layout) -> None:
    """config.json: the special tokens, by string. Sources and targets come whole from the caller
    (prefix and suffix tokens included), so CTranslate2 adds nothing to them."""
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = target[UNK_ID], target[BOS_ID], target[EOS_ID]
    spec.config.add_source_bos = spec.config.add_source_eos = False
    # Ours starts from BOS, like fairseq's from EOS; an imported model from its own token. With a
    # zero start vector the token only has to be in the vocabulary: EOS, as CTranslate2's own
    # Marian converter writes. A model that starts from a language code (mBART-25) gets none:
    # the caller gives it as the first token of the target prefix, so that it may choose another
    # target language (as CTranslate2's converter writes mBART-25).
    start = config.decoder_start_id
    if layout.zero_start:
        spec.config.decoder_start_token = target[EOS_ID]
    else:
        spec.config.decoder_start_token = target[start] if start in (PAD_ID, UNK_ID, BOS_ID, EOS_ID) else None


def _numpy(tensor) -> Any:
    return tensor.detach().float().cpu().numpy().copy()


def _set_inputs(spec, embedding, positions, scale: bool, norm) -> None:
    (spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings).weight = _numpy(embedding)
    spec.position_encodings.encodings = _numpy(positions)
    spec.scale_embeddings = bool(scale)
    if norm is not None:
        _set_norm(spec.layernorm_embedding, norm)


def _set_attention(spec, attention, norm, fused: list) -> None:
    """`fused`: the input projections in CTranslate2's order (self: [qkv]; cross: [q, kv])."""
    for linear_spec, linear in zip(spec.linear, [*fused, attention.out]):
        _set_linear(linear_spec, linear)
    _set_norm(spec.layer_norm, norm)


def _set_ffn(spec, ffn, norm) -> None:
    _set_linear(spec.linear_0, ffn.inner)
    _set_linear(spec.linear_1, ffn.outer)
    _set_norm(spec.layer_norm, norm)


def _set_linear(spec, linear) -> None:
    spec.weight = _numpy(linear.weight)
    if linear.bias is not None:
        spec.bias = _numpy(linear.bias)


def _set_norm(spec, norm) -> None:
    spec.gamma = _numpy(norm.weight)
    spec.beta = _numpy(norm.bias)
