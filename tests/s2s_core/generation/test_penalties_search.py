"""The pure pieces, alone: penalties and constraints, the beam and sampling steps, the config checks."""

from __future__ import annotations

import math

import pytest
import torch

from s2s_core.config import build
from s2s_core.errors import ConfigError
from s2s_core.generation import GenerationConfig
from s2s_core.generation.penalties import (
    apply_length_bounds,
    block_repeated_ngrams,
    end_when_stuck,
    filter_for_sampling,
    forbid_specials,
    length_normalizer,
)
from s2s_core.generation.search import TOP_CHUNK, beam_step, sample_step, top_candidates
from s2s_core.tokenizer import EOS_ID

INF = float("inf")
V = 8


def uniform(rows: int = 2) -> torch.Tensor:
    return torch.full((rows, V), -math.log(V))


def allowed(log_probs: torch.Tensor) -> list[list[int]]:
    return [row.isfinite().nonzero().flatten().tolist() for row in log_probs]


def test_pad_and_bos_are_never_generated():
    out = forbid_specials(uniform())
    assert allowed(out) == [[1, 3, 4, 5, 6, 7]] * 2
    assert out[0, EOS_ID] == pytest.approx(-math.log(V))


def test_rows_at_their_limit_may_only_end_and_keep_the_eos_log_probability():
    log_probs = torch.log_softmax(torch.arange(2 * V, dtype=torch.float).view(2, V), dim=1)
    eos = log_probs[:, EOS_ID].clone()
    out = apply_length_bounds(log_probs.clone(), step=3, limits=torch.tensor([3, 5]), min_length=0)
    assert allowed(out) == [[EOS_ID], list(range(V))]
    assert out[0, EOS_ID] == eos[0]  # a true log-probability, not renormalised to 0


def test_min_length_forbids_eos_unless_the_limit_forces_it():
    out = apply_length_bounds(uniform(3), step=2, limits=torch.tensor([2, 5, 5]), min_length=3)
    assert allowed(out) == [[EOS_ID], [0, 1, 2, 4, 5, 6, 7], [0, 1, 2, 4, 5, 6, 7]]
    later = apply_length_bounds(uniform(1), step=3, limits=torch.tensor([5]), min_length=3)
    assert allowed(later) == [list(range(V))]  # from min_length tokens on, EOS is allowed


@pytest.mark.parametrize("history, size, banned", [
    ([4, 5, 6, 4, 5], 3, [6]),         # "4 5" was followed by 6
    ([4, 5, 4, 7, 4], 2, [5, 7]),      # every token that followed 4
    ([4, 5, 6, 7], 2, []),             # 7 was never followed
    ([4, 5, 4], 1, [4, 5]),            # unigrams: every token used so far
    ([4, 5], 3, []),                   # shorter than an n-gram: nothing to repeat
    ([4, 4, 4], 0, []),                # 0: repeats allowed
])
def test_repeated_ngrams_are_blocked(history, size, banned):
    out = block_repeated_ngrams(uniform(1), torch.tensor([history]), size)
    assert sorted(set(range(V)) - set(allowed(out)[0])) == banned


def test_ngram_blocking_is_per_row():
    history = torch.tensor([[4, 5, 4], [5, 4, 5]])
    out = block_repeated_ngrams(uniform(2), history, 2)
    assert [sorted(set(range(V)) - set(row)) for row in allowed(out)] == [[5], [4]]


def test_a_row_with_no_allowed_token_may_end():
    log_probs = uniform(2)
    eos = log_probs[:, EOS_ID].clone()
    log_probs[0] = -INF
    log_probs[1, EOS_ID] = -INF
    out = end_when_stuck(log_probs, eos)
    assert allowed(out) == [[EOS_ID], [0, 1, 2, 4, 5, 6, 7]]
    assert out[0, EOS_ID] == eos[0]


def test_gnmt_length_normalizer():
    assert length_normalizer(7, 0.0) == 1.0
    assert length_normalizer(7, 1.0) == pytest.approx(2.0)
    assert length_normalizer(13, 0.5) == pytest.approx(math.sqrt(3.0))
    torch.testing.assert_close(length_normalizer(torch.tensor([1.0, 7.0]), 1.0), torch.tensor([1.0, 2.0]))


def probabilities(filtered: torch.Tensor) -> list[float]:
    return [round(p, 4) for p in filtered.softmax(dim=1)[0].tolist()]


def test_top_k_keeps_the_k_most_likely_tokens():
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3]]))
    assert allowed(filter_for_sampling(logits, 1.0, 2, 1.0)) == [[1, 3]]
    assert allowed(filter_for_sampling(logits, 1.0, 0, 1.0)) == [[0, 1, 2, 3]]
    assert allowed(filter_for_sampling(logits, 1.0, 9, 1.0)) == [[0, 1, 2, 3]]  # k >= V keeps all


@pytest.mark.parametrize("top_p, kept", [(0.35, [1]), (0.45, [1, 3]), (0.75, [1, 3, 2]),
                                         (0.95, [0, 1, 2, 3]), (1e-6, [1])])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3]]))
    assert allowed(filter_for_sampling(logits, 1.0, 0, top_p)) == [sorted(kept)]


def test_temperature_flattens_or_sharpens_and_combines_with_top_k():
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3]]))
    assert probabilities(filter_for_sampling(logits, 1.0, 0, 1.0)) == [0.1, 0.4, 0.2, 0.3]
    hot = filter_for_sampling(logits, 1e6, 0, 1.0)
    assert probabilities(hot) == [0.25] * 4
    sharp = probabilities(filter_for_sampling(logits, 0.5, 3, 1.0))
    assert sharp == [0.0, round(16 / 29, 4), round(4 / 29, 4), round(9 / 29, 4)]


def test_beam_step_uses_2k_candidates_and_finishes_eos_among_the_first_k():
    # 1 sentence, K = 2, V = 5 (only tokens 3 = EOS and 4 matter).
    scores = torch.tensor([[0.0, -1.0]])
    log_probs = torch.full((1, 2, 5), -INF)
    log_probs[0, 0, EOS_ID], log_probs[0, 0, 4] = -0.1, -0.5  # candidates -0.1 (EOS), -0.5
    log_probs[0, 1, EOS_ID], log_probs[0, 1, 4] = -0.05, -2.0  # candidates -1.05 (EOS), -3.0
    out = beam_step(scores, log_probs)
    # Ranked: -0.1 EOS (ends), -0.5 tok4 beam0, -1.05 EOS (rank 3 > K: dropped), -3.0 tok4 beam1.
    assert out.ended_scores.tolist() == [[pytest.approx(-0.1), -INF]]
    assert out.ended_beams[0, 0] == 0
    assert out.live_scores.tolist() == [[pytest.approx(-0.5), pytest.approx(-3.0)]]
    assert out.live_beams.tolist() == [[0, 1]] and out.live_tokens.tolist() == [[4, 4]]


def test_beam_step_with_fewer_candidates_than_beams_leaves_empty_beams():
    scores = torch.tensor([[0.0, -INF, -INF]])  # the first step: one real hypothesis
    log_probs = torch.full((1, 3, 5), -INF)
    log_probs[:, :, 4] = -0.2
    log_probs[:, :, EOS_ID] = -1.0
    out = beam_step(scores, log_probs)
    assert out.live_scores[0, 0] == pytest.approx(-0.2) and out.live_tokens[0, 0] == 4
    assert out.live_scores[0, 1:].tolist() == [-INF, -INF]
    # ended candidates keep their rank among the first K: EOS ranks second here
    assert out.ended_scores[0].tolist() == [-INF, pytest.approx(-1.0), -INF]
    assert out.ended_beams[0, 1] == 0


@pytest.mark.parametrize("width", [50, 40 * TOP_CHUNK, 40 * TOP_CHUNK + 77])  # plain topk; whole chunks; a tail
def test_top_candidates_equal_topk(width):
    generator = torch.Generator().manual_seed(width)
    values = torch.randn(6, width, generator=generator)
    values[0, -5:] = 10.0 + torch.arange(5.0)  # all best in the tail (or the last chunk)
    first = min(TOP_CHUNK, width)
    values[1, :first] = 5.0 + torch.rand(first, generator=generator)  # all in the first chunk
    values[2, ::TOP_CHUNK] = 7.0 + torch.arange(float(len(values[2, ::TOP_CHUNK])))  # one per chunk
    values[3, 2:] = -INF  # fewer finite values than k
    values[4, 10:20] = torch.linspace(3.0, 4.0, 10)  # the best side by side
    for k in (1, 8):
        top, columns = top_candidates(values, k)
        expected = values.topk(k, dim=1)
        assert torch.equal(top, expected.values)
        assert torch.equal(values.gather(1, columns), top)  # the columns hold those values
        finite = top.isfinite()
        assert torch.equal(columns[finite], expected.indices[finite])  # unique finite values: same columns


def test_sample_step_draws_from_the_filtered_distribution_and_reports_model_log_probs():
    log_probs = torch.log_softmax(torch.randn(3, V), dim=1)
    only = torch.full((3, V), -INF)
    only[0, 4], only[1, 6], only[2, EOS_ID] = 0.0, 0.0, 0.0
    tokens, token_log_probs = sample_step(log_probs, only, torch.Generator().manual_seed(0))
    assert tokens.tolist() == [4, 6, EOS_ID]
    torch.testing.assert_close(token_log_probs, log_probs[[0, 1, 2], [4, 6, EOS_ID]])


def test_sample_step_is_reproducible_for_a_seed():
    logits = torch.zeros(64, V)
    draw = lambda seed: sample_step(logits, logits, torch.Generator().manual_seed(seed))[0].tolist()  # noqa: E731
    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


# --- the config, checked at the boundary --------------------------------------------------------

def test_defaults_are_valid_and_the_length_limit_follows_its_formula():
    config = build(GenerationConfig, {})
    assert config.problems() == []
    assert config.length_limit(10) == 25
    assert build(GenerationConfig, {"max_length": 20}).length_limit(10) == 20
    assert build(GenerationConfig, {"max_length": 0}).length_limit(10) == 0


@pytest.mark.parametrize("data, message", [
    ({"beam_size": 0}, r"invalid configuration: `beam_size` must be >= 1, but is 0$"),
    ({"nbest": 5, "beam_size": 4}, r"`nbest` must be <= `beam_size` \(4\), but is 5"),
    ({"sampling": True}, r"`beam_size` must be 1 with `sampling`, but is 4"),
    ({"temperature": 0}, r"`temperature` must be > 0, but is 0"),
    ({"top_p": 0.0}, r"`top_p` must be in \(0, 1\], but is 0.0"),
    ({"top_p": 1.5}, r"`top_p` must be in \(0, 1\], but is 1.5"),
    ({"max_length": -1}, r"`max_length` must be >= 0, but is -1"),
    ({"min_length": -2}, r"`min_length` must be >= 0, but is -2"),
    ({"length_penalty": -0.5}, r"`length_penalty` must be >= 0, but is -0.5"),
    ({"no_repeat_ngram_size": -1}, r"`no_repeat_ngram_size` must be >= 0, but is -1"),
    ({"top_k": -1}, r"`top_k` must be >= 0, but is -1"),
    ({"max_tokens": 0}, r"`max_tokens` must be >= 1, but is 0"),
    ({"max_source_tokens": 1}, r"`max_source_tokens` must be 0 \(the model's limit\) or >= 2, but is 1"),
    ({"beam_size": "4"}, r"`beam_size` must be int, but is '4'"),
    ({"beam": 4}, r"unknown key `beam` \(valid keys: .*beam_size"),
])
def test_config_problems_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        build(GenerationConfig, data)


def test_every_config_problem_is_reported_at_once():
    with pytest.raises(ConfigError, match=r"\(3 problems\)") as info:
        build(GenerationConfig, {"beam_size": 0, "temperature": -1, "top_p": 2})
    assert [p.split("`")[1] for p in info.value.problems] == ["beam_size", "temperature", "top_p"]

