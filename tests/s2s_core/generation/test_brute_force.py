"""Beam search against exhaustive enumeration on toy models (vocabulary 6: PAD, UNK, BOS, EOS and
two ordinary tokens, so UNK, EOS, 4 and 5 are the real choices at each step)."""

from __future__ import annotations

import itertools

import pytest
import torch

from s2s_core.generation.penalties import length_normalizer
from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID
from tests.s2s_core.generation.common import PRESETS, generate, rescore, sources, toy_model

VOCAB = 6
CHOICES = [1, 4, 5]  # every token but PAD, BOS (forbidden) and EOS (ends the sequence)
SOURCES = [[4, 5, 1, 4], [5]]  # two lengths: the second row is padded


def enumerate_all(model, src_row, limit: int, alpha: float) -> list[tuple[list[int], float, float]]:
    """Every output of at most `limit` tokens (EOS after it), as (tokens, log P, score), best first."""
    outputs = [list(seq) for n in range(limit + 1) for seq in itertools.product(CHOICES, repeat=n)]
    log_probs = rescore(model, src_row, outputs)
    rows = [(out, lp, lp / float(length_normalizer(len(out) + 1, alpha))) for out, lp in zip(outputs, log_probs)]
    return sorted(rows, key=lambda row: -row[2])


def exhaustive_beam(limit: int) -> int:
    """A beam as large as the number of outputs: every live prefix stays, and every EOS ending
    ranks among the first K of the 2K candidates (at most 4 * 3 ** (limit - 1) at any step),
    so nothing falls out of the search and every output can be returned."""
    return sum(len(CHOICES) ** n for n in range(limit + 1))


def assert_same_lists(found, expected):
    assert [h.tokens for h in found] == [row[0] for row in expected]
    for hyp, (tokens, log_prob, score) in zip(found, expected):
        assert hyp.score == pytest.approx(score, abs=1e-5), tokens
        assert hyp.log_prob == pytest.approx(log_prob, abs=1e-5), tokens


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("preset", PRESETS)
def test_exhaustive_beam_returns_every_sequence_in_brute_force_order(preset, alpha):
    limit = 3
    model = toy_model(preset, VOCAB, seed=11)
    src = sources(SOURCES)
    beam = exhaustive_beam(limit)
    out = generate(model, src, beam_size=beam, nbest=beam, max_len_a=0.0, max_len_b=limit, length_penalty=alpha)
    for row, hyps in zip(src, out):
        expected = enumerate_all(model, row, limit, alpha)
        assert len(expected) == 1 + 3 + 9 + 27
        # The order is only well defined where scores differ by more than twice the tolerance
        # (float32 sums in the search are off by about 1e-6).
        assert min(a[2] - b[2] for a, b in zip(expected, expected[1:])) > 2e-5
        assert_same_lists(hyps, expected)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("preset", PRESETS)
def test_nbest_1_of_an_exhaustive_beam_is_the_global_optimum(preset, alpha):
    # A peaky (scaled) model, limit 3: the single answer is the optimum over all 40 outputs.
    limit = 3
    model = toy_model(preset, VOCAB, seed=12, scale=3.0)
    src = sources(SOURCES)
    out = generate(model, src, beam_size=exhaustive_beam(limit), nbest=1, max_len_a=0.0, max_len_b=limit,
                   length_penalty=alpha)
    for row, hyps in zip(src, out):
        assert_same_lists(hyps, enumerate_all(model, row, limit, alpha)[:1])


@pytest.mark.parametrize("preset", PRESETS)
def test_beam_of_vocabulary_size(preset):
    # K = V: 2K candidates out of K*V, fewer valid candidates than beams at the first step.
    model = toy_model(preset, VOCAB, seed=13)
    src = sources(SOURCES)
    exact = generate(model, src, beam_size=VOCAB, nbest=VOCAB, max_len_a=0.0, max_len_b=1, length_penalty=1.0)
    for row, hyps in zip(src, exact):  # limit 1: 4 outputs, all within the beam
        assert_same_lists(hyps, enumerate_all(model, row, 1, 1.0))
    # limit 3 is past what K = 6 covers: whatever is returned is a real output with its true
    # score, best first, and cannot beat the optimum.
    deeper = generate(model, src, beam_size=VOCAB, nbest=VOCAB, max_len_a=0.0, max_len_b=3, length_penalty=1.0)
    for row, hyps in zip(src, deeper):
        truth = {tuple(tokens): score for tokens, _, score in enumerate_all(model, row, 3, 1.0)}
        assert len(hyps) == VOCAB
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for hyp in hyps:
            assert hyp.score == pytest.approx(truth[tuple(hyp.tokens)], abs=1e-5)
        assert hyps[0].score <= max(truth.values()) + 1e-6


@pytest.mark.parametrize("preset", PRESETS)
@torch.no_grad()
def test_greedy_is_the_step_by_step_argmax(preset):
    model = toy_model(preset, VOCAB, seed=14)
    src = sources(SOURCES)
    out = generate(model, src, beam_size=1, max_len_a=0.0, max_len_b=4, length_penalty=0.0)
    for row, (best,) in zip(src, out):
        prefix: list[int] = []
        total = 0.0
        while True:  # teacher-forced re-decoding of the prefix, argmax over the allowed tokens
            prev = torch.tensor([[BOS_ID] + prefix])
            log_probs = torch.log_softmax(model(row[row != PAD_ID][None], prev)[0, -1].double(), dim=-1)
            allowed = [EOS_ID] if len(prefix) == 4 else CHOICES + [EOS_ID]
            token = max(allowed, key=lambda t: float(log_probs[t]))
            total += float(log_probs[token])
            if token == EOS_ID:
                break
            prefix.append(token)
        assert best.tokens == prefix
        assert best.log_prob == pytest.approx(total, abs=1e-5)
