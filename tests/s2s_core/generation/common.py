"""Helpers shared by the generation tests: tiny random models, padded sources, teacher-forced rescoring."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s2s_core.generation import GenerationConfig, Generator, Hypothesis
from s2s_core.models import build_model, model_config
from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID

PRESETS = ["transformer-tiny", "lstm-tiny"]


def toy_model(preset: str, vocab: int, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """A freshly initialised tiny model with a `vocab`-token shared vocabulary, in eval mode;
    `scale` multiplies every weight (fresh models are near uniform and barely depend on the
    prefix; scaled ones end sentences at different steps, as trained models do)."""
    torch.manual_seed(seed)
    model = build_model(model_config(preset, {"src_vocab_size": vocab, "tgt_vocab_size": vocab})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale)
    return model


def sources(rows: list[list[int]]) -> Tensor:
    """Id lists (EOS appended here) -> (N, S) right-padded source batch."""
    width = max(len(row) for row in rows) + 1
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row) + 1] = torch.tensor(row + [EOS_ID])
    return out


def generate(model: nn.Module, src: Tensor, **options) -> list[list[Hypothesis]]:
    return Generator(model, GenerationConfig(**options)).generate(src)


def tokens_of(out: list[list[Hypothesis]]) -> list[list[list[int]]]:
    return [[h.tokens for h in hyps] for hyps in out]


@torch.no_grad()
def rescore(model: nn.Module, src_row: Tensor, outputs: list[list[int]]) -> list[float]:
    """log P(output + EOS | source) under teacher forcing, in float64: (S,) source, without padding
    -> one sum of token log-probabilities per output (log-softmax over the whole vocabulary)."""
    width = max(len(out) for out in outputs) + 1
    prev = torch.full((len(outputs), width), PAD_ID, dtype=torch.long)
    for i, out in enumerate(outputs):
        prev[i, : len(out) + 1] = torch.tensor([BOS_ID] + out)
    src = src_row[src_row != PAD_ID][None].expand(len(outputs), -1)
    log_probs = torch.log_softmax(model(src, prev).double(), dim=-1)  # (M, T, V)
    return [float(sum(log_probs[i, t, token] for t, token in enumerate(out + [EOS_ID])))
            for i, out in enumerate(outputs)]


def repeated_ngrams(tokens: list[int], size: int) -> list[tuple[int, ...]]:
    """The n-grams of `size` that occur more than once in `tokens`."""
    grams = [tuple(tokens[i:i + size]) for i in range(len(tokens) - size + 1)]
    return sorted({g for g in grams if grams.count(g) > 1})
