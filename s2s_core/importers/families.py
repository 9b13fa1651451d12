"""The Hugging Face model families we import, and how each one's config.json becomes a
`TransformerConfig` of our one Transformer (or a one-line refusal naming what it cannot express).

How Hugging Face builds each family (transformers 5.x, `modeling_<family>.py`):
- marian: post-norm, sinusoidal positions with sines then cosines (no offset), embeddings scaled
  per `scale_embedding`, a `final_logits_bias`, no BOS token, the decoder starts from PAD;
- m2m_100 (M2M-100 and NLLB): pre-norm with a final LayerNorm per stack, fairseq's sinusoidal
  positions starting at padding_idx + 1, no logits bias, the decoder starts from EOS;
- bart: post-norm, learned positions offset by 2, a LayerNorm on the embeddings, a logits bias;
- mbart: as bart, but pre-norm with a final LayerNorm per stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from s2s_core.errors import CheckpointError
from s2s_core.models.config import TransformerConfig


@dataclass(frozen=True)
class Family:
    """What a family fixes in our Transformer's options."""

    name: str
    positions: str
    norm: str
    embedding_norm: bool
    logits_bias: bool


FAMILIES: dict[str, Family] = {
    "marian": Family("marian", "sinusoidal-halves", "post", embedding_norm=False, logits_bias=True),
    "m2m_100": Family("m2m_100", "sinusoidal-fairseq", "pre", embedding_norm=False, logits_bias=False),
    "bart": Family("bart", "learned", "post", embedding_norm=True, logits_bias=True),
    "mbart": Family("mbart", "learned", "pre", embedding_norm=True, logits_bias=True),
}
"""Supported `model_type`s (NLLB checkpoints are `m2m_100`)."""

SUPPORTED = "marian, m2m_100 (M2M-100 and NLLB), bart, mbart"

ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu-tanh", "gelu_pytorch_tanh": "gelu-tanh",
               "swish": "silu", "silu": "silu"}
"""Hugging Face `activation_function` -> ours."""

REQUIRED_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                 "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "pad_token_id", "eos_token_id")

LEARNED_OFFSET = 2
"""BART's and mBART's learned position tables start real positions at row 2."""

# Keys of older BART-style configs that switch architecture features Hugging Face's current
# classes no longer read: a checkpoint that sets them away from what the family's class builds
# was made for another architecture, and would be silently misread.
_LEGACY_FLAGS: dict[str, Callable[[Family], bool]] = {
    "normalize_before": lambda f: f.norm == "pre",
    "add_final_layer_norm": lambda f: f.norm == "pre",
    "normalize_embedding": lambda f: f.embedding_norm,
    "add_bias_logits": lambda f: False,
    "static_position_embeddings": lambda f: f.positions != "learned",
}


def family_of(config: dict[str, Any], where: str) -> Family:
    """The family of a config.json.

    Raises:
        CheckpointError: a model_type we do not import (T5 named as such), or none.
    """
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in FAMILIES:
        return FAMILIES[model_type]
    if isinstance(model_type, str) and "t5" in model_type.lower():
        raise CheckpointError(where, f"T5 checkpoints (model_type {model_type}) are not supported: T5's relative "
                                     f"position buckets and RMS norms are not options of our Transformer "
                                     f"(supported: {SUPPORTED})")
    raise CheckpointError(where, f"unsupported model_type {model_type!r} (supported: {SUPPORTED})")


def position_offset(family: Family, config: dict[str, Any]) -> int:
    """Row of the position table that position 0 reads."""
    if family.positions == "learned":
        return LEARNED_OFFSET
    if family.positions == "sinusoidal-fairseq":
        return int(config.get("pad_token_id", 1)) + 1  # fairseq numbers real positions from padding_idx + 1
    return 0


def unsupported_features(family: Family, config: dict[str, Any]) -> list[str]:
    """What `config` asks for that our Transformer cannot express, one phrase each."""
    out = []
    for first, second in (("encoder_attention_heads", "decoder_attention_heads"),
                          ("encoder_ffn_dim", "decoder_ffn_dim")):
        if config.get(first) != config.get(second):
            out.append(f"{first} ({config.get(first)}) != {second} ({config.get(second)})")
    activation = config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        out.append(f"activation_function {activation!r} (supported: {', '.join(ACTIVATIONS)})")
    for key, expected in _LEGACY_FLAGS.items():
        if key in config and bool(config[key]) != expected(family):
            out.append(f"{key}={str(config[key]).lower()} (a {family.name} checkpoint has "
                       f"{str(expected(family)).lower()})")
    if config.get("is_encoder_decoder") is False:
        out.append("is_encoder_decoder=false (a decoder-only model)")
    if family.name == "marian" and not config.get("share_encoder_decoder_embeddings", True):
        out.append("share_encoder_decoder_embeddings=false (separate source and target vocabularies)")
    if family.name == "marian" and config.get("decoder_vocab_size") not in (None, config.get("vocab_size")):
        out.append(f"decoder_vocab_size ({config.get('decoder_vocab_size')}) != vocab_size "
                   f"({config.get('vocab_size')})")
    return out


def transformer_config(family: Family, config: dict[str, Any], vocab_size: int, tie_output: bool,
                       decoder_start_id: int, where: str) -> TransformerConfig:
    """Our config for a checkpoint of `family`: `vocab_size` (ours: the embedding rows, plus an
    added BOS), the output projection tied or not, the decoder start token in our ids.

    Raises:
        CheckpointError: naming every feature of `config` we cannot express.
    """
    missing = [key for key in REQUIRED_KEYS if not isinstance(config.get(key), int)]
    if missing:
        raise CheckpointError(where, f"config.json lacks {', '.join(missing)} (or they are not integers)")
    problems = unsupported_features(family, config)
    if problems:
        raise CheckpointError(where, f"cannot import this {family.name} checkpoint: {'; '.join(problems)}")
    return TransformerConfig(
        src_vocab_size=vocab_size, tgt_vocab_size=vocab_size,
        d_model=int(config["d_model"]), heads=int(config["encoder_attention_heads"]),
        encoder_layers=int(config["encoder_layers"]), decoder_layers=int(config["decoder_layers"]),
        ffn_dim=int(config["encoder_ffn_dim"]),
        dropout=float(config.get("dropout", 0.1)), attention_dropout=float(config.get("attention_dropout", 0.0)),
        activation=ACTIVATIONS[config.get("activation_function", "gelu")],  # type: ignore[arg-type]
        norm=family.norm,  # type: ignore[arg-type]
        share_embeddings=True, tie_output=tie_output,
        max_positions=int(config.get("max_position_embeddings", 1024)),
        scale_embeddings=bool(config.get("scale_embedding", False)),
        positions=family.positions,  # type: ignore[arg-type]
        position_offset=position_offset(family, config),
        embedding_norm=family.embedding_norm, output_bias=family.logits_bias,
        decoder_start_id=decoder_start_id,
    )
