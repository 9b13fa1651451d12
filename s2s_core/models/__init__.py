"""Sequence-to-sequence models: pure `nn.Module`s built from typed configs (no I/O, no devices).

Every family implements the same interface, which the trainer and the generator rely on
(B batch, S source length, T target length, V target vocabulary):

- `forward(src_tokens (B, S), prev_tokens (B, T), output_mask (B, T) bool | None) -> logits`:
  teacher-forced (B, T, V), or (N, V) for the True positions of `output_mask` in row-major
  order (selected before the vocabulary projection, so padding costs no projection work);
- `encode(src_tokens) -> EncoderOutput`;
- `init_state(encoder_out) -> state` and `decode_step(prev_token (B,), state) -> (B, V)` logits,
  which updates `state` in place (= `project(decode_hidden(prev_token, state))`, the split
  letting the generator project large batches a slice of rows at a time); `state.reorder(indices (B',))` selects/repeats rows of
  every cached tensor (beam expansion and reordering);
- `decoder_start_id`: the token fed to the decoder first (BOS, unless an imported model says otherwise).

Special ids are fixed (s2s_core.tokenizer): PAD_ID pads source and target rows, on the right.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from s2s_core.errors import ConfigError
from s2s_core.models.config import (
    PRESETS,
    LSTMConfig,
    ModelConfig,
    TransformerConfig,
    config_from_dict,
    model_config,
    unset_vocab_problems,
)
from s2s_core.models.lstm import LSTMModel
from s2s_core.models.state import DecoderState, EncoderOutput
from s2s_core.models.transformer import TransformerModel

MODEL_CLASSES: dict[str, Callable[..., nn.Module]] = {
    "lstm": LSTMModel,
    "transformer": TransformerModel,
}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model for `config` (on the CPU, in float32, in training mode).

    Raises:
        ConfigError: if the config has problems, e.g. vocabulary sizes still 0 (unset).
    """
    problems = config.problems() + unset_vocab_problems(config)
    if problems:
        raise ConfigError(problems)
    return MODEL_CLASSES[config.family](config)


def num_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameter values, each shared/tied tensor counted once."""
    return sum(p.numel() for p in model.parameters())  # parameters() already skips duplicates


__all__ = [
    "PRESETS",
    "DecoderState",
    "EncoderOutput",
    "LSTMConfig",
    "ModelConfig",
    "TransformerConfig",
    "build_model",
    "config_from_dict",
    "model_config",
    "num_parameters",
]
