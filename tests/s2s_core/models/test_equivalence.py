"""Numerical contracts of every family: padding invariance, incremental == full decoding,
beam reordering, and the pinned sizes of the presets."""

from __future__ import annotations

import pytest
import torch

from s2s_core.models import build_model, model_config, num_parameters
from s2s_core.tokenizer import BOS_ID
from tests.s2s_core.models.common import VARIANTS, VOCAB, pad, random_rows, src_vocab, tiny, with_bos

# Counted with 8,000-token shared vocabularies; a change here changes every checkpoint's shape.
PINNED_PARAMETERS = {
    "transformer-base": 48_236_544,
    "transformer-small": 7_578_624,
    "transformer-tiny": 679_680,
    "lstm-attention": 14_075_904,
    "lstm-tiny": 611_584,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padding_does_not_change_a_rows_logits(variant):
    model = tiny(variant)
    g = torch.Generator().manual_seed(3)
    sources = random_rows([4, 11, 7], src_vocab(model), g)
    targets = with_bos(random_rows([3, 9, 5], VOCAB, g))
    batched = model(pad(sources), pad(targets))  # (3, 10, V)
    for i, (src, prev) in enumerate(zip(sources, targets)):
        alone = model(src[None], prev[None])[0]  # (T_i, V)
        torch.testing.assert_close(batched[i, :len(prev)], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_incremental_decoding_equals_full_decoding(variant):
    model = tiny(variant)
    g = torch.Generator().manual_seed(4)
    src = pad(random_rows([6, 10, 3], src_vocab(model), g))
    prev = pad(with_bos(random_rows([8, 8, 8], VOCAB, g)))  # (3, 9), no padding
    full = model(src, prev)  # (3, 9, V)
    state = model.init_state(model.encode(src))
    steps = torch.stack([model.decode_step(prev[:, t], state) for t in range(prev.shape[1])], dim=1)
    torch.testing.assert_close(steps, full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reorder_follows_the_selected_rows(variant):
    # Decode 2 steps, reorder rows as a beam search would, decode on: each new row must
    # continue exactly the history of the row it was copied from.
    model = tiny(variant)
    g = torch.Generator().manual_seed(5)
    src = pad(random_rows([5, 8], src_vocab(model), g))
    prev = pad(with_bos(random_rows([4, 4], VOCAB, g)))  # (2, 5)
    order = torch.tensor([1, 0, 1])
    full = model(src[order], prev[order])  # (3, 5, V)
    state = model.init_state(model.encode(src))
    for t in range(2):
        model.decode_step(prev[:, t], state)
    state.reorder(order)
    for t in range(2, prev.shape[1]):
        logits = model.decode_step(prev[order, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=0, atol=1e-5)


def test_first_step_depends_only_on_bos_and_source():
    model = tiny("transformer-pre")
    src = torch.randint(4, VOCAB, (2, 6))
    state = model.init_state(model.encode(src))
    first = model.decode_step(torch.full((2,), BOS_ID), state)
    torch.testing.assert_close(first, model(src, torch.full((2, 1), BOS_ID))[:, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(PINNED_PARAMETERS))
def test_preset_parameter_counts_are_pinned(preset):
    model = build_model(model_config(preset, {"src_vocab_size": 8000, "tgt_vocab_size": 8000}))
    count = num_parameters(model)
    print(f"{preset}: {count:,} parameters (8k shared vocabulary)")
    assert count == PINNED_PARAMETERS[preset]
