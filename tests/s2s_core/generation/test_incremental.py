"""Incremental decoding (KV caches, LSTM states, reordered as beams move and sentences leave)
gives the outputs of re-running the whole decoder on every prefix."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from tests.s2s_core.generation.common import PRESETS, generate, sources, tokens_of, toy_model

VOCAB = 12  # small enough that EOS is often likely: sentences end at different steps


@dataclass
class PrefixState:
    """The whole history instead of a cache: each row's source and its decoded prefix."""

    src: Tensor
    """(B, S) source ids."""
    prefix: Tensor
    """(B, t) tokens fed so far (BOS first)."""

    def reorder(self, indices: Tensor, same_sources: bool = False) -> None:
        # Always reorder the sources, whatever `same_sources` claims: a wrong claim by the
        # generator then shows up as a difference from the real (trusting) model.
        self.src, self.prefix = self.src[indices], self.prefix[indices]


class FullRedecoder(nn.Module):
    """Test adapter: the model's decoding interface, answered by a full teacher-forced forward
    pass over the prefix at every step (no incremental state at all)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode(self, src: Tensor) -> Tensor:
        return src

    def init_state(self, src: Tensor) -> PrefixState:
        return PrefixState(src=src, prefix=src.new_empty(src.shape[0], 0))

    def decode_step(self, prev: Tensor, state: PrefixState) -> Tensor:
        """(B,) -> (B, V) logits at the last position of the re-decoded prefix."""
        state.prefix = torch.cat([state.prefix, prev[:, None]], dim=1)
        return self.model(state.src, state.prefix)[:, -1]

    def decode_hidden(self, prev: Tensor, state: PrefixState) -> Tensor:
        return self.decode_step(prev, state)  # the "hidden state" is the logits themselves...

    def project(self, hidden: Tensor) -> Tensor:
        return hidden  # ... so the projection is the identity


SOURCES = [[4, 5, 6], [7, 8, 9, 10, 11, 4, 5, 6], [9], [6, 7, 8, 9, 10], [11, 10, 9, 8, 7, 6, 5, 4, 1, 4, 5]]

OPTIONS = {
    "greedy": {"beam_size": 1},
    "beam4": {"beam_size": 4, "nbest": 4, "length_penalty": 1.0},
    "beam4-constrained": {"beam_size": 4, "nbest": 2, "length_penalty": 0.6, "min_length": 2,
                          "no_repeat_ngram_size": 2},
}


@pytest.mark.parametrize("options", sorted(OPTIONS))
@pytest.mark.parametrize("preset", PRESETS)
def test_incremental_decoding_gives_the_outputs_of_full_re_decoding(preset, options):
    model = toy_model(preset, VOCAB, seed=2, scale=3.0)
    src = sources(SOURCES)
    config = OPTIONS[options] | {"max_len_a": 1.0, "max_len_b": 2}
    incremental = generate(model, src, **config)
    full = generate(FullRedecoder(model), src, **config)
    assert tokens_of(incremental) == tokens_of(full)
    for mine, reference in zip(incremental, full):
        assert [h.score for h in mine] == pytest.approx([h.score for h in reference], rel=2e-5, abs=1e-5)
        assert [h.log_prob for h in mine] == pytest.approx([h.log_prob for h in reference], rel=2e-5, abs=1e-5)
    # The set-up must make sentences leave the batch at different steps (rows dropped from the
    # state, sources reordered) and hypotheses end before their limits; otherwise this test
    # would not cover those paths.
    limits = [len(row) + 1 + 2 for row in SOURCES]
    assert len({max(len(h.tokens) for h in hyps) for hyps in incremental}) > 1
    assert any(len(h.tokens) < limit for hyps, limit in zip(incremental, limits) for h in hyps)


@pytest.mark.parametrize("groups, group", [([0, 0, 1, 1, 2, 2], 2), ([0, 0, 0, 1, 1], 1), ([2, 2, 0, 1], 1)])
def test_transformer_state_shares_source_tensors_within_beam_groups(groups, group):
    """Beams of one sentence share its cross-attention K/V (one row per group); rows that come in no
    such groups get one row each; both give the decoder steps of a state with a row per row."""
    model = toy_model("transformer-tiny", VOCAB, seed=3, scale=3.0)
    src = sources(SOURCES[:3])
    indices = torch.tensor(groups)
    grouped = model.init_state(model.encode(src))
    grouped.reorder(indices)
    expanded = model.init_state(model.encode(src[indices]))
    assert grouped.group == group
    assert grouped.layers[0].cross_keys.shape[0] == len(groups) // group
    prev = torch.arange(4, 4 + len(groups))
    rows = torch.arange(len(groups))
    # Step 0 keeps every row (same sources), step 1 drops the last one (the sources change).
    for keep, same in [(rows, True), (rows[:-1], False), (rows[:-1], True)]:
        torch.testing.assert_close(model.decode_hidden(prev, grouped), model.decode_hidden(prev, expanded))
        grouped.reorder(keep, same_sources=same)
        expanded.reorder(keep, same_sources=same)
        prev, rows = prev[keep], rows[: len(keep)]
