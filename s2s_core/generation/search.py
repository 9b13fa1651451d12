"""Pure search steps: from scores and next-token log-probabilities to the next hypotheses.

No model, no state, no Python loop over sentences: the generator calls one of these per step.
Shapes: N sentences, K beams, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from s2s_core.generation.penalties import NEG_INF
from s2s_core.tokenizer import EOS_ID


@dataclass
class BeamStep:
    """The outcome of one beam step for every sentence."""

    live_scores: Tensor
    """(N, K) log P of the hypotheses that continue; -inf where a sentence has fewer than K."""
    live_beams: Tensor
    """(N, K) long: the beam each continuing hypothesis extends."""
    live_tokens: Tensor
    """(N, K) long: the token it appends."""
    ended_scores: Tensor
    """(N, K) log P of hypotheses that end with EOS at this step; -inf where none."""
    ended_beams: Tensor
    """(N, K) long: the beam each ended hypothesis extends."""
    ended_tokens: Tensor
    """(N, K) long: the token it ends with: EOS, or (a sentence being cut) its last token."""


def beam_step(scores: Tensor, log_probs: Tensor, tokens: Tensor | None = None,
              cut: Tensor | None = None) -> BeamStep:
    """scores (N, K) cumulative log P of the live beams (-inf: empty beam), log_probs (N, K, C)
    of C candidate next tokens per beam: the whole vocabulary (C = V, `tokens` None) or the
    token ids `tokens` (N, K, C), e.g. each beam's best 2K (enough: see below).

    The best 2K extensions of each sentence are ranked; those among the first K that end
    with EOS are finished hypotheses, and the first K that do not end continue (fairseq's
    rule: looking at 2K candidates keeps K live beams even when K of them end here).
    Sentences where `cut` (N,) bool is True reached their length limit: their first K
    candidates end whatever the token, and none continues.
    """
    sentences, beams, width_per_beam = log_probs.shape
    candidates = (scores[:, :, None] + log_probs).view(sentences, beams * width_per_beam)  # (N, K*C)
    width = min(2 * beams, beams * width_per_beam)
    top_scores, top_index = candidates.topk(width, dim=1)  # (N, 2K), best first
    top_beams = top_index // width_per_beam
    top_tokens = top_index % width_per_beam if tokens is None else tokens.view(sentences, -1).gather(1, top_index)
    valid = top_scores > NEG_INF
    ends = top_tokens == EOS_ID
    if cut is not None:
        ends = ends | cut[:, None]
    rank = torch.arange(width, device=scores.device).expand(sentences, width)
    ended = (ends & valid & (rank < beams))[:, :beams]
    # Stable order: continuing candidates by rank, then everything else.
    order = torch.where(ends | ~valid, rank + width, rank).argsort(dim=1)[:, :beams]  # (N, K)
    continues = (~ends & valid).gather(1, order)
    return BeamStep(
        live_scores=top_scores.gather(1, order).masked_fill(~continues, NEG_INF),
        live_beams=top_beams.gather(1, order),
        live_tokens=top_tokens.gather(1, order),
        ended_scores=top_scores[:, :beams].masked_fill(~ended, NEG_INF),
        ended_beams=top_beams[:, :beams],
        ended_tokens=top_tokens[:, :beams],
    )


TOP_CHUNK = 256
"""Columns per chunk of `top_candidates`."""


def top_candidates(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """values (r, V) -> the k largest of each row, best first, and their columns (r, k) each:
    `values.topk(k, dim=1)`, several times faster on a large vocabulary.

    The columns are cut into chunks of TOP_CHUNK; the k largest values lie in (at most) the k
    chunks with the largest maxima, so a vectorised max over the row picks those, and the exact
    top-k runs on them (plus the columns left over after the last whole chunk) only. Ties may
    come out in another order than topk's (its own order among ties is not specified either).
    """
    rows, width = values.shape
    chunks = width // TOP_CHUNK
    if chunks < 4 * k:
        return values.topk(k, dim=1)
    body = values[:, : chunks * TOP_CHUNK].unflatten(1, (chunks, TOP_CHUNK))  # (r, c, w)
    best = body.amax(dim=2).topk(k, dim=1).indices.sort(dim=1).values  # (r, k) chunks, in column order
    picked = body.gather(1, best[:, :, None].expand(rows, k, TOP_CHUNK)).flatten(1)  # (r, k * w)
    top, where = torch.cat([picked, values[:, chunks * TOP_CHUNK:]], dim=1).topk(k, dim=1)
    inside = where < k * TOP_CHUNK
    chunk = best.gather(1, torch.where(inside, where // TOP_CHUNK, 0))
    columns = torch.where(inside, chunk * TOP_CHUNK + where % TOP_CHUNK, where + (chunks - k) * TOP_CHUNK)
    return top, columns


def sample_step(log_probs: Tensor, sampling_logits: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One token per row drawn from softmax(sampling_logits (R, V)) -> (tokens (R,), their
    log P under the model's own distribution `log_probs` (R, V))."""
    probs = sampling_logits.softmax(dim=1)
    tokens = torch.multinomial(probs, 1, generator=generator)  # (R, 1)
    return tokens[:, 0], log_probs.gather(1, tokens)[:, 0]
