"""The decoding options imported models need (Hugging Face's semantics), against exhaustive
enumeration on toy models: a decoder start token other than BOS, forced first tokens, length
normalization by length ** alpha, and the two other endings at the length limit (a forced EOS
that scores 0, and cutting without EOS)."""

from __future__ import annotations

import itertools

import pytest
import torch

from s2s_core.generation import GenerationConfig, Generator
from s2s_core.generation.penalties import length_normalizer
from s2s_core.models import build_model, model_config
from s2s_core.tokenizer import EOS_ID, PAD_ID
from tests.s2s_core.generation.common import sources

VOCAB = 6
CHOICES = [1, 4, 5]  # every token but PAD, BOS (forbidden) and EOS
SOURCES = [[4, 5, 1, 4], [5]]
LIMIT = 3


def toy(start: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = model_config("transformer-tiny", {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB,
                                               "decoder_start_id": start, "positions": "sinusoidal-fairseq",
                                               "position_offset": 2})
    return build_model(config).eval()


@torch.no_grad()
def token_log_probs(model, src_row, sequence: list[int]) -> list[float]:
    """Teacher-forced log P of each token of `sequence`, the decoder started from its start token."""
    prev = torch.tensor([[model.decoder_start_id] + sequence[:-1]])
    log_probs = torch.log_softmax(model(src_row[src_row != PAD_ID][None], prev)[0].double(), dim=-1)
    return [float(log_probs[t, token]) for t, token in enumerate(sequence)]


def enumerate_outputs(model, src_row, prefix: list[int], ending: str, alpha: float):
    """Every output (tokens after the prefix, log P, score) under `ending`, best first: the prefix
    adds 0 to log P but counts in the length and its limit, as Hugging Face's forced BOS does."""
    room = LIMIT - len(prefix)
    ended = [list(seq) + [EOS_ID] for n in range(room + (ending != "cut")) for seq in itertools.product(CHOICES, repeat=n)]
    if ending == "cut":
        ended += [list(seq) for seq in itertools.product(CHOICES, repeat=room)]
    rows = []
    for sequence in ended:
        terms = token_log_probs(model, src_row, prefix + sequence)[len(prefix):]
        if ending == "forced-eos" and len(prefix) + len(sequence) == LIMIT + 1:
            terms[-1] = 0.0  # the EOS forced at the limit
        log_prob = sum(terms)
        length = len(prefix) + len(sequence)
        tokens = sequence[:-1] if sequence[-1] == EOS_ID else sequence
        rows.append((tokens, log_prob, log_prob / float(length_normalizer(length, alpha, "power"))))
    return sorted(rows, key=lambda row: -row[2])


@pytest.mark.parametrize("ending", ["eos", "forced-eos", "cut"])
@pytest.mark.parametrize("prefix", [[], [5]], ids=["no-prefix", "forced-prefix"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_an_exhaustive_beam_returns_every_output_in_brute_force_order(ending, prefix, alpha):
    model = toy(start=EOS_ID, seed=21)
    src = sources(SOURCES)
    beam = 1 + 3 + 9 + 27  # more than every output: nothing falls out of the search
    config = GenerationConfig(beam_size=beam, nbest=beam, max_len_a=0.0, max_len_b=LIMIT, max_length=LIMIT,
                              length_penalty=alpha, length_normalization="power", limit_ending=ending)
    out = Generator(model, config, prefix=prefix).generate(src)
    for row, hyps in zip(src, out):
        expected = enumerate_outputs(model, row, prefix, ending, alpha)
        # The order is only well defined where scores differ by more than the search's float32 error.
        assert min(a[2] - b[2] for a, b in zip(expected, expected[1:])) > 2e-5
        assert [h.tokens for h in hyps] == [tokens for tokens, _, _ in expected]
        for hyp, (tokens, log_prob, score) in zip(hyps, expected):
            assert hyp.log_prob == pytest.approx(log_prob, abs=1e-5), tokens
            assert hyp.score == pytest.approx(score, abs=1e-5), tokens


def test_greedy_starts_from_the_models_start_token_and_forces_the_prefix():
    model = toy(start=EOS_ID, seed=22)
    src = sources(SOURCES)
    config = GenerationConfig(beam_size=1, max_len_a=0.0, max_len_b=LIMIT, max_length=LIMIT, limit_ending="cut")
    for row, (best,) in zip(src, Generator(model, config, prefix=[4]).generate(src)):
        sequence = [4]
        while len(sequence) < LIMIT:  # argmax re-decoding after the forced token
            with torch.no_grad():
                prev = torch.tensor([[model.decoder_start_id] + sequence])
                scores = torch.log_softmax(model(row[row != PAD_ID][None], prev)[0, -1].double(), dim=-1)
            token = max(CHOICES + [EOS_ID], key=lambda t: float(scores[t]))
            if token == EOS_ID:
                break
            sequence.append(token)
        assert best.tokens == sequence[1:]


def test_length_normalizers():
    assert length_normalizer(4, 1.0, "power") == 4.0
    assert length_normalizer(4, 0.5, "power") == 2.0
    assert length_normalizer(4, 1.0) == pytest.approx(1.5)  # GNMT: (5 + 4) / 6
    assert length_normalizer(torch.tensor([9.0]), 0.5, "power").item() == 3.0
    assert length_normalizer(4, 0.0, "power") == 1.0
