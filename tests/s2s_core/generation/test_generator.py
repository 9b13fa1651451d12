"""The decoding loop's contracts: length limits and EOS, nbest lists, n-gram blocking, sampling,
and the greedy shim used by training validation."""

from __future__ import annotations

import pytest

from s2s_core.generation.greedy import greedy_decode
from s2s_core.generation.penalties import length_normalizer
from s2s_core.tokenizer import EOS_ID
from tests.s2s_core.generation.common import (
    PRESETS,
    generate,
    repeated_ngrams,
    rescore,
    sources,
    tokens_of,
    toy_model,
)

VOCAB = 12  # 9 ordinary choices per step: UNK and 4..11
SOURCES = [[4, 5, 6], [7, 8, 9, 10, 11, 4, 5, 6], [9], [6, 7, 8, 9, 10]]


@pytest.fixture(scope="module", params=PRESETS)
def model(request):
    return toy_model(request.param, VOCAB, seed=2, scale=3.0)


def lengths(out) -> list[list[int]]:
    return [[len(h.tokens) for h in hyps] for hyps in out]


@pytest.mark.parametrize("beam", [1, 3])
def test_max_length_0_gives_empty_outputs_scored_by_their_eos(model, beam):
    src = sources(SOURCES)
    out = generate(model, src, beam_size=beam, nbest=beam, max_length=0, length_penalty=1.0)
    assert tokens_of(out) == [[[]]] * len(SOURCES)  # one possible output each
    for row, (hyp,) in zip(src, out):
        assert hyp.log_prob == pytest.approx(rescore(model, row, [[]])[0], abs=1e-4)
        assert hyp.score == pytest.approx(hyp.log_prob / ((5 + 1) / 6), abs=1e-6)


def test_the_limit_is_per_sentence_and_follows_max_len_a_and_b(model):
    src = sources(SOURCES)
    # min_length above every limit: each output is exactly as long as its limit allows
    out = generate(model, src, beam_size=2, nbest=2, max_len_a=1.5, max_len_b=1, min_length=99)
    expected = [int(1.5 * (len(row) + 1)) + 1 for row in SOURCES]  # source tokens include EOS
    assert lengths(out) == [[n, n] for n in expected]
    capped = generate(model, src, beam_size=2, max_len_a=1.5, max_len_b=1, max_length=5, min_length=99)
    assert lengths(capped) == [[min(n, 5)] for n in expected]


@pytest.mark.parametrize("beam", [1, 3])
def test_min_length_forces_longer_outputs(model, beam):
    src = sources(SOURCES)
    options = {"beam_size": beam, "nbest": beam, "max_len_a": 0.0, "max_len_b": 8}
    free = generate(model, src, **options)
    assert min(min(n) for n in lengths(free)) < 4  # guard: some output would be shorter
    forced = generate(model, src, min_length=4, **options)
    assert min(min(n) for n in lengths(forced)) >= 4
    assert max(max(n) for n in lengths(forced)) <= 8


def test_min_length_above_the_limit_lets_the_limit_win(model):
    src = sources(SOURCES)
    out = generate(model, src, beam_size=3, nbest=3, max_len_a=0.0, max_len_b=3, min_length=10)
    assert lengths(out) == [[3, 3, 3]] * len(SOURCES)
    for row, hyps in zip(src, out):  # the forced EOS keeps its true log-probability
        assert [h.log_prob for h in hyps] == pytest.approx(rescore(model, row, [h.tokens for h in hyps]), abs=1e-4)


def test_a_source_of_only_eos_decodes_alone_and_in_a_batch(model):
    options = {"beam_size": 3, "nbest": 3, "max_len_a": 2.0, "max_len_b": 1}
    alone = generate(model, sources([[]]), **options)
    batch = generate(model, sources([SOURCES[1], [], SOURCES[0]]), **options)
    assert tokens_of(alone)[0] == tokens_of(batch)[1]
    assert [h.score for h in alone[0]] == pytest.approx([h.score for h in batch[1]], abs=1e-5)
    assert max(lengths(alone)[0]) <= 3  # limit: 2.0 * 1 + 1
    forced = generate(model, sources([[]]), min_length=99, **options)
    assert lengths(forced) == [[3, 3, 3]]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_nbest_lists_are_sorted_distinct_and_truly_scored(model, alpha):
    src = sources(SOURCES)
    out = generate(model, src, beam_size=5, nbest=5, max_len_a=0.0, max_len_b=6, length_penalty=alpha)
    for row, hyps in zip(src, out):
        assert len(hyps) == 5
        assert len({tuple(h.tokens) for h in hyps}) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for hyp in hyps:
            assert EOS_ID not in hyp.tokens
            assert hyp.score == pytest.approx(hyp.log_prob / float(length_normalizer(len(hyp.tokens) + 1, alpha)))
        assert [h.log_prob for h in hyps] == pytest.approx(rescore(model, row, [h.tokens for h in hyps]), abs=1e-4)
    top = generate(model, src, beam_size=5, nbest=2, max_len_a=0.0, max_len_b=6, length_penalty=alpha)
    assert tokens_of(top) == [t[:2] for t in tokens_of(out)]


@pytest.mark.parametrize("size", [2, 3])
def test_no_repeat_ngram_size_leaves_no_repeated_ngram(model, size):
    src = sources(SOURCES)
    options = {"beam_size": 4, "nbest": 4, "max_len_a": 0.0, "max_len_b": 14, "min_length": 12}
    free = generate(model, src, **options)
    assert any(repeated_ngrams(h.tokens, size) for hyps in free for h in hyps)  # guard
    blocked = generate(model, src, no_repeat_ngram_size=size, **options)
    for hyps in blocked:
        assert len(hyps) == 4
        for hyp in hyps:
            assert len(hyp.tokens) >= 12 and repeated_ngrams(hyp.tokens, size) == []


@pytest.mark.parametrize("search", [{"beam_size": 3, "nbest": 3}, {"beam_size": 1, "sampling": True}])
def test_constraints_that_forbid_every_token_end_the_output(model, search):
    # Unigram blocking leaves 9 usable tokens while min_length asks for 11: after 9 tokens
    # nothing is allowed, and the hypothesis ends instead of vanishing (or sampling NaNs).
    src = sources(SOURCES)
    out = generate(model, src, max_len_a=0.0, max_len_b=12, min_length=11, no_repeat_ngram_size=1, **search)
    for hyps in out:
        assert hyps, "every sentence has a hypothesis"
        for hyp in hyps:
            assert len(hyp.tokens) == 9 and len(set(hyp.tokens)) == 9


SAMPLING = {"beam_size": 1, "sampling": True, "max_len_a": 0.0, "max_len_b": 10, "temperature": 1.5}


def test_sampling_is_reproducible_for_a_seed_and_differs_across_seeds(model):
    src = sources(SOURCES * 2)
    first = tokens_of(generate(model, src, seed=7, **SAMPLING))
    assert tokens_of(generate(model, src, seed=7, **SAMPLING)) == first
    assert tokens_of(generate(model, src, seed=8, **SAMPLING)) != first
    assert first[: len(SOURCES)] != first[len(SOURCES):]  # same source, different draws


def test_sampled_outputs_are_scored_by_the_model_not_the_tempered_distribution(model):
    src = sources(SOURCES)
    out = generate(model, src, seed=3, length_penalty=0.0, **SAMPLING)
    for row, (hyp,) in zip(src, out):
        assert hyp.log_prob == pytest.approx(rescore(model, row, [hyp.tokens])[0], abs=1e-4)
        assert hyp.score == hyp.log_prob


def test_sampling_with_top_k_1_is_greedy_search(model):
    src = sources(SOURCES)
    sampled = generate(model, src, seed=1, top_k=1, **SAMPLING)
    greedy = generate(model, src, beam_size=1, max_len_a=0.0, max_len_b=10)
    assert tokens_of(sampled) == tokens_of(greedy)


def test_greedy_shim_matches_beam_1_and_its_length_limit(model):
    src = sources(SOURCES)
    shim = greedy_decode(model, src, max_len_a=0.5, max_len_b=2)
    assert shim == [hyps[0].tokens for hyps in generate(model, src, beam_size=1, max_len_a=0.5, max_len_b=2,
                                                         max_length=1 << 20)]
    limits = [int(0.5 * (len(row) + 1)) + 2 for row in SOURCES]
    assert all(len(out) <= limit for out, limit in zip(shim, limits))

