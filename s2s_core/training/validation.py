"""Validation: loss on held-out pairs and BLEU/chrF (sacrebleu) of greedy translations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from s2s_core.generation.config import GenerationConfig
from s2s_core.generation.generator import Generator
from s2s_core.metrics import bleu_chrf
from s2s_core.tokenizer import PAD_ID, Tokenizer
from s2s_core.training.batching import OUR_ROWS, RowLayout, TokenizedPairs, make_batch, plan_batches
from s2s_core.training.config import ValidationConfig
from s2s_core.training.loss import label_smoothed_nll

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "loss": False}


@dataclass
class ValidationSet:
    """Held-out pairs: tokenised for the loss, and the raw reference texts for BLEU/chrF."""

    pairs: TokenizedPairs
    references: list[str]
    layout: RowLayout = OUR_ROWS
    """The model rows of the pairs (the same as training's)."""


def improved(metric: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score > best if HIGHER_IS_BETTER[metric] else score < best


@torch.no_grad()
def validate(model: torch.nn.Module, data: ValidationSet, config: ValidationConfig, target_tokenizer: Tokenizer,
             smoothing: float, max_tokens: int, device: torch.device) -> dict[str, float]:
    """Scores of `model` (an unwrapped module) on `data`; restores train mode afterwards.

    Returns a dict with valid_loss, valid_nll (nats per target token) and, when decoding is
    enabled, bleu and chrf on the first `decode_sentences` pairs.
    """
    was_training = model.training
    model.eval()
    try:
        scores = _loss(model, data, config.loss_sentences, smoothing, max_tokens, device)
        if config.decode_sentences:
            scores.update(_bleu_chrf(model, data, config, target_tokenizer, max_tokens, device))
    finally:
        model.train(was_training)
    return scores


def _loss(model, data: ValidationSet, limit: int, smoothing: float, max_tokens: int,
          device: torch.device) -> dict[str, float]:
    pairs, layout = data.pairs, data.layout
    rows = np.arange(min(limit, len(pairs)))
    loss = nll = tokens = 0.0
    for batch_rows in plan_batches(pairs, rows, max_tokens, seed=0, layout=layout):
        batch = make_batch(pairs, batch_rows, layout).to(device)
        mask = batch.target != PAD_ID
        logits = model(batch.src, batch.prev, output_mask=mask)  # (N, V)
        batch_loss, batch_nll = label_smoothed_nll(logits, batch.target[mask], smoothing)
        loss, nll, tokens = loss + float(batch_loss), nll + float(batch_nll), tokens + int(mask.sum())
    return {"valid_loss": loss / max(tokens, 1), "valid_nll": nll / max(tokens, 1)}


def _bleu_chrf(model, data: ValidationSet, config: ValidationConfig, tokenizer: Tokenizer, max_tokens: int,
               device: torch.device) -> dict[str, float]:
    count = min(config.decode_sentences, len(data.pairs))
    hypotheses = [""] * count
    # Greedy, from the model's start token, with the target prefix forced first (an imported
    # model's target language code), as generation does.
    greedy = Generator(model, GenerationConfig(beam_size=1, max_len_a=config.max_len_a, max_len_b=config.max_len_b,
                                               max_length=1 << 20), prefix=data.layout.target_prefix)
    # Length-sorted batches decode faster; results go back to their original positions.
    for batch_rows in plan_batches(data.pairs, np.arange(count), max_tokens // 2, seed=0, layout=data.layout):
        batch = make_batch(data.pairs, batch_rows, data.layout).to(device)
        for row, hyps in zip(batch_rows, greedy.generate(batch.src)):
            hypotheses[row] = tokenizer.decode(hyps[0].tokens)
    return {**bleu_chrf(hypotheses, data.references[:count], ndigits=None), "sentences": count}
