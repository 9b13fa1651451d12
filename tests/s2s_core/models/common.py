"""Helpers shared by the model tests: tiny model variants covering every option, padded batches."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from s2s_core.models import build_model, model_config
from s2s_core.tokenizer import BOS_ID, PAD_ID

VOCAB = 50
"""Target (and shared) vocabulary of the random-token tests."""
SRC_VOCAB = 60
"""Source vocabulary of the variants with separate embeddings."""

# name -> (preset, overrides): every family and option the equivalence tests must hold for.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "transformer-pre": ("transformer-tiny", {}),
    "transformer-post": ("transformer-tiny", {"norm": "post"}),
    "transformer-untied-gelu": ("transformer-tiny", {"share_embeddings": False, "tie_output": False,
                                                     "src_vocab_size": SRC_VOCAB, "activation": "gelu",
                                                     "scale_embeddings": False, "d_model": 48, "heads": 3}),
    # The options imported Hugging Face families set (s2s_core.importers.families).
    "transformer-bart-like": ("transformer-tiny", {"norm": "post", "positions": "learned", "position_offset": 2,
                                                   "embedding_norm": True, "output_bias": True, "activation": "gelu",
                                                   "scale_embeddings": False}),
    "transformer-mbart-like": ("transformer-tiny", {"positions": "learned", "position_offset": 2,
                                                    "embedding_norm": True, "output_bias": True,
                                                    "activation": "gelu-tanh"}),
    "transformer-m2m-like": ("transformer-tiny", {"positions": "sinusoidal-fairseq", "position_offset": 2,
                                                  "decoder_start_id": 3}),
    "transformer-marian-like": ("transformer-tiny", {"norm": "post", "positions": "sinusoidal-halves",
                                                     "activation": "silu", "output_bias": True, "decoder_start_id": 0,
                                                     "final_norm": True}),
    "lstm-bahdanau": ("lstm-tiny", {}),
    "lstm-luong-general-2layers": ("lstm-tiny", {"attention": "luong-general", "layers": 2}),
    "lstm-luong-dot-untied": ("lstm-tiny", {"attention": "luong-dot", "share_embeddings": False,
                                            "tie_output": False, "src_vocab_size": SRC_VOCAB}),
    "lstm-tied-projection": ("lstm-tiny", {"embed_dim": 32, "hidden_size": 48}),
}


def tiny(variant: str, seed: int = 0) -> nn.Module:
    """A freshly initialised model of `variant` in eval mode (dropout off)."""
    preset, overrides = VARIANTS[variant]
    torch.manual_seed(seed)
    config = model_config(preset, {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB} | overrides)
    return build_model(config).eval()


def src_vocab(model: nn.Module) -> int:
    return model.config.src_vocab_size


def random_rows(lengths: list[int], vocab: int, generator: torch.Generator) -> list[Tensor]:
    """One (length,) row of ordinary token ids (no specials) per length."""
    return [torch.randint(4, vocab, (n,), generator=generator) for n in lengths]


def pad(rows: list[Tensor]) -> Tensor:
    """Rows of different lengths -> (B, max length), right-padded with PAD_ID."""
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD_ID)


def with_bos(rows: list[Tensor]) -> list[Tensor]:
    return [torch.cat([torch.tensor([BOS_ID]), row]) for row in rows]
