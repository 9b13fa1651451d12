"""Model configurations: one dataclass per family, named presets, and loading from plain data.

A config is built through `s2s_core.config.build`, which reports unknown keys, wrong types and
every value problem (each class's `problems()`) together in one `ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from s2s_core.config import at_least, build, merge, probabilities, to_dict
from s2s_core.errors import ConfigError
from s2s_core.tokenizer import BOS_ID

MIN_VOCAB = 4
"""pad, unk, bos and eos have fixed ids 0-3 (s2s_core.tokenizer), so a real vocabulary is larger."""


@dataclass(kw_only=True)
class TransformerConfig:
    family: Literal["transformer"] = "transformer"
    """Model family; selects the model class."""
    src_vocab_size: int = 0
    """Source vocabulary size; 0 means the trainer fills it in from the tokenizer."""
    tgt_vocab_size: int = 0
    """Target vocabulary size; 0 means the trainer fills it in from the tokenizer."""
    d_model: int = 512
    """Width of embeddings and of every layer's input/output."""
    heads: int = 8
    """Attention heads; `d_model` must be divisible by it."""
    encoder_layers: int = 6
    """Encoder layers."""
    decoder_layers: int = 6
    """Decoder layers."""
    ffn_dim: int = 2048
    """Inner width of each layer's feed-forward block."""
    dropout: float = 0.1
    """Dropout on embeddings and on every sublayer's output before the residual sum."""
    attention_dropout: float = 0.0
    """Dropout on attention weights."""
    activation: Literal["relu", "gelu", "gelu-tanh", "silu"] = "relu"
    """Feed-forward activation (gelu: exact erf form; gelu-tanh: the tanh approximation; silu = swish)."""
    norm: Literal["pre", "post"] = "pre"
    """LayerNorm before each sublayer (plus a final one per stack) or after each residual sum."""
    final_norm: bool | None = None
    """A LayerNorm at the end of each stack; None: exactly when `norm` is pre (pre-norm leaves the
    residual stream unnormalised)."""
    share_embeddings: bool = True
    """One embedding table for source and target (needs equal vocabulary sizes)."""
    tie_output: bool = True
    """The output projection reuses the target embedding table (with `share_embeddings`: one table for all three)."""
    max_positions: int = 1024
    """Longest source or target sequence (tokens) the position table covers."""
    scale_embeddings: bool = True
    """Multiply embeddings by sqrt(d_model) before adding positions."""
    positions: Literal["sinusoidal", "sinusoidal-halves", "sinusoidal-fairseq", "learned"] = "sinusoidal"
    """Position table: sinusoidal with sin/cos in alternate columns (ours), sinusoidal-halves with
    all sines then all cosines (Marian), sinusoidal-fairseq with halves and fairseq's frequencies
    (M2M-100, NLLB), or learned (one table per stack; BART, mBART)."""
    position_offset: int = 0
    """Position p reads row p + offset of the table (fairseq-style models start real tokens at
    padding_idx + 1 = 2; a learned table then has `max_positions + offset` rows)."""
    embedding_norm: bool = False
    """A LayerNorm on the embeddings plus positions of each stack, before dropout (BART, mBART)."""
    output_bias: bool = False
    """A fixed (not trained) bias on the output logits (Hugging Face's `final_logits_bias`)."""
    decoder_start_id: int = BOS_ID
    """The decoder's first input token: BOS for ours; an imported model's own (EOS for BART and
    M2M-100/NLLB, PAD for Marian), in our ids."""

    def problems(self) -> list[str]:
        out = _vocab_problems(self.src_vocab_size, self.tgt_vocab_size, self.share_embeddings)
        out += at_least(self, 1, "d_model", "heads", "encoder_layers", "decoder_layers", "ffn_dim", "max_positions")
        if self.d_model >= 1 and self.heads >= 1 and self.d_model % self.heads:
            out.append(f"`d_model` must be divisible by `heads` ({self.heads}), but is {self.d_model}")
        out += probabilities(self, "dropout", "attention_dropout")
        out += at_least(self, 0, "position_offset", "decoder_start_id")
        if 0 < self.tgt_vocab_size <= self.decoder_start_id:
            out.append(f"`decoder_start_id` must be < `tgt_vocab_size` ({self.tgt_vocab_size}), "
                       f"but is {self.decoder_start_id}")
        return out

    def has_final_norm(self) -> bool:
        """Whether each stack ends with a LayerNorm (`final_norm`, or pre-norm when it is None)."""
        return self.norm == "pre" if self.final_norm is None else self.final_norm


@dataclass(kw_only=True)
class LSTMConfig:
    family: Literal["lstm"] = "lstm"
    """Model family; selects the model class."""
    src_vocab_size: int = 0
    """Source vocabulary size; 0 means the trainer fills it in from the tokenizer."""
    tgt_vocab_size: int = 0
    """Target vocabulary size; 0 means the trainer fills it in from the tokenizer."""
    embed_dim: int = 512
    """Width of the source and target embeddings."""
    hidden_size: int = 512
    """Decoder hidden size; the bidirectional encoder has hidden_size/2 per direction (so it must be even)."""
    layers: int = 2
    """LSTM layers in the encoder and in the decoder."""
    dropout: float = 0.2
    """Dropout on embeddings, between LSTM layers and on the attentional output."""
    attention: Literal["bahdanau", "luong-general", "luong-dot"] = "bahdanau"
    """Attention score: additive (Bahdanau), bilinear (Luong general) or dot product (Luong dot)."""
    share_embeddings: bool = True
    """One embedding table for source and target (needs equal vocabulary sizes)."""
    tie_output: bool = True
    """The output projection reuses the target embedding table; if embed_dim != hidden_size, a
    bias-free hidden_size -> embed_dim projection is inserted before it."""

    def problems(self) -> list[str]:
        out = _vocab_problems(self.src_vocab_size, self.tgt_vocab_size, self.share_embeddings)
        out += at_least(self, 1, "embed_dim", "layers")
        if self.hidden_size < 2 or self.hidden_size % 2:
            out.append(f"`hidden_size` must be even and >= 2 (the encoder has hidden_size/2 per direction), "
                       f"but is {self.hidden_size}")
        out += probabilities(self, "dropout")
        return out


ModelConfig = TransformerConfig | LSTMConfig
FAMILIES: dict[str, type[TransformerConfig] | type[LSTMConfig]] = {
    "lstm": LSTMConfig,
    "transformer": TransformerConfig,
}


def _vocab_problems(src: int, tgt: int, shared: bool) -> list[str]:
    out = []
    for name, value in (("src_vocab_size", src), ("tgt_vocab_size", tgt)):
        if value != 0 and value < MIN_VOCAB:
            out.append(f"`{name}` must be >= {MIN_VOCAB} (or 0: filled in from the tokenizer), but is {value}")
    if shared and src and tgt and src != tgt:
        out.append(f"`share_embeddings` needs `src_vocab_size` == `tgt_vocab_size`, but they are {src} and {tgt}")
    return out


def unset_vocab_problems(config: ModelConfig) -> list[str]:
    """Problems of a config that is about to become a model: vocabulary sizes must be known by now."""
    return [f"`{name}` must be set (>= {MIN_VOCAB}) before building a model, but is 0 "
            "(the trainer fills it in from the tokenizer)"
            for name in ("src_vocab_size", "tgt_vocab_size") if getattr(config, name) == 0]


def transformer_base() -> TransformerConfig:
    """Vaswani et al. base: 6+6 layers, d_model 512, 8 heads, FFN 2048 (about 44M + vocab params)."""
    return TransformerConfig(d_model=512, heads=8, encoder_layers=6, decoder_layers=6, ffn_dim=2048, dropout=0.1)


def transformer_small() -> TransformerConfig:
    """3+3 layers, d_model 256, 4 heads, FFN 1024: trains on a CPU in reasonable time."""
    return TransformerConfig(d_model=256, heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=1024, dropout=0.1)


def transformer_tiny() -> TransformerConfig:
    """2+2 layers, d_model 64: for tests."""
    return TransformerConfig(d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=128, dropout=0.1)


def lstm_attention() -> LSTMConfig:
    """2-layer bidirectional-encoder LSTM, 512 hidden, Bahdanau attention with input feeding."""
    return LSTMConfig(embed_dim=512, hidden_size=512, layers=2, attention="bahdanau")


def lstm_tiny() -> LSTMConfig:
    """1 layer, 64 hidden: for tests."""
    return LSTMConfig(embed_dim=64, hidden_size=64, layers=1, attention="bahdanau")


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "transformer-base": transformer_base,
    "transformer-small": transformer_small,
    "transformer-tiny": transformer_tiny,
    "lstm-attention": lstm_attention,
    "lstm-tiny": lstm_tiny,
}


def model_config(preset: str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The config of a named preset with `overrides` (plain nested data) applied and validated.

    Raises:
        ConfigError: for an unknown preset, unknown keys, wrong types or invalid values (all at once).
    """
    if preset not in PRESETS:
        raise ConfigError([f"unknown model preset {preset!r} (valid presets: {', '.join(PRESETS)})"])
    base = PRESETS[preset]()
    return build(type(base), merge(to_dict(base), overrides or {}))


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config from its plain form (e.g. a saved model's `config.json`); `family` picks the class.

    Raises:
        ConfigError: for a missing or unknown family, or any problem `build()` finds.
    """
    if not isinstance(data, dict):
        raise ConfigError([f"a model config must be a mapping, not {type(data).__name__}"])
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ConfigError([f"`family` must be one of {', '.join(FAMILIES)}, but is {family!r}"])
    return build(FAMILIES[family], data)

