"""Penalties and constraints on next-token log-probabilities, applied outside the search step.

Shapes: R rows (sentences x beams), V vocabulary, t tokens generated so far. Every function
edits `log_probs` in place and returns it; -inf marks a forbidden token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = float("-inf")


def forbid_specials(log_probs: Tensor) -> Tensor:
    """(R, V): PAD and BOS are never generated."""
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, BOS_ID] = NEG_INF
    return log_probs


def apply_length_bounds(log_probs: Tensor, step: int, limits: Tensor, min_length: int) -> Tensor:
    """(R, V) at decoding step `step` (tokens generated so far), with per-row `limits` (R,).

    Rows at their limit may only end (EOS, keeping its log-probability, so scores stay true
    log-probabilities); before `min_length` tokens, EOS is forbidden unless the limit forces it.
    """
    at_limit = limits <= step  # (R,)
    if step < min_length:
        eos = log_probs[:, EOS_ID].clone()
        log_probs[:, EOS_ID] = torch.where(at_limit, eos, torch.full_like(eos, NEG_INF))
    if bool(at_limit.any()):
        eos = log_probs[at_limit, EOS_ID]
        log_probs[at_limit] = NEG_INF
        log_probs[at_limit, EOS_ID] = eos
    return log_probs


def block_repeated_ngrams(log_probs: Tensor, history: Tensor, size: int) -> Tensor:
    """(R, V) with history (R, t): forbid every token that would complete an n-gram of `size`
    already present in the row's history (fairseq's / HF's `no_repeat_ngram_size`)."""
    steps = history.shape[1]
    if size <= 0 or steps < size:
        return log_probs
    if size == 1:
        return log_probs.scatter_(1, history, NEG_INF)
    windows = history.unfold(1, size, 1)  # (R, W, size): every n-gram so far
    current = history[:, steps - size + 1:]  # (R, size - 1): the prefix the next token extends
    matches = (windows[:, :, :-1] == current[:, None, :]).all(dim=2)  # (R, W)
    rows, positions = matches.nonzero(as_tuple=True)
    log_probs[rows, windows[rows, positions, -1]] = NEG_INF
    return log_probs


def end_when_stuck(log_probs: Tensor, eos_log_probs: Tensor) -> Tensor:
    """(R, V) after every constraint, with (R,) the unconstrained EOS log-probabilities: a row whose
    constraints forbid every token (n-gram blocking plus `min_length` on a tiny vocabulary) may end,
    so each sentence still gets a hypothesis and sampling never draws from an all-zero distribution."""
    stuck = torch.isneginf(log_probs).all(dim=1)  # (R,)
    if bool(stuck.any()):
        log_probs[stuck, EOS_ID] = eos_log_probs[stuck]
    return log_probs


def end_stuck_candidates(values: Tensor, tokens: Tensor, eos_log_probs: Tensor) -> None:
    """`end_when_stuck` on each row's best candidates, in place: values/tokens (R, C) sorted
    best first, so a row is stuck exactly when its first candidate is -inf."""
    stuck = values[:, 0] == NEG_INF  # (R,)
    if bool(stuck.any()):
        values[stuck, 0] = eos_log_probs[stuck]
        tokens[stuck, 0] = EOS_ID


def length_normalizer(lengths: Tensor | int, alpha: float, kind: str = "gnmt") -> Tensor | float:
    """What a hypothesis's log P is divided by: GNMT's ((5 + length) / 6) ** alpha, or with kind
    "power" length ** alpha (Hugging Face, fairseq); length counts generated tokens with EOS."""
    if alpha == 0:
        return 1.0
    if kind == "power":
        return lengths ** alpha if isinstance(lengths, Tensor) else float(lengths) ** alpha
    return ((5.0 + lengths) / 6.0) ** alpha


def force_tokens(rows: int, token: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The candidates of a forced step for `rows` rows: log P 0 (R, 1) for `token` (R, 1); as
    Hugging Face's forced BOS, a given token adds nothing to the score."""
    values = torch.zeros(rows, 1, device=device)
    return values, torch.full((rows, 1), token, dtype=torch.long, device=device)


def filter_for_sampling(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """(R, V) logits -> (R, V) tempered logits with everything outside top-k / top-p at -inf.

    Top-p keeps the smallest set of most likely tokens whose probability reaches `top_p`
    (the token that crosses the threshold included), so at least one token always survives.
    """
    logits = logits / temperature
    if 0 < top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        cumulative = sorted_logits.softmax(dim=1).cumsum(dim=1)
        outside = cumulative - sorted_logits.softmax(dim=1) >= top_p  # mass before this token already enough
        logits = logits.scatter(1, order, sorted_logits.masked_fill(outside, NEG_INF))
    return logits
