"""Training configs: defaults, every problem of training and model sections reported together."""

from __future__ import annotations

import pytest

from s2s_core.errors import ConfigError
from s2s_core.training.config import resolve


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolve(data)
    return info.value.problems


def test_defaults_resolve_to_transformer_small():
    train, model = resolve({})
    assert train.preset == "transformer-small" and model.d_model == 256 and model.encoder_layers == 3
    assert (train.batching.max_tokens, train.schedule.kind, train.optim.label_smoothing) == (4096, "inverse_sqrt", 0.1)


def test_model_overrides_reach_the_model_config():
    train, model = resolve({"preset": "lstm-attention", "model": {"attention": "luong-dot", "layers": 1}})
    assert (model.family, model.attention, model.layers) == ("lstm", "luong-dot", 1)
    assert train.model is model  # typed: the preset with its overrides, not the overrides alone


def test_every_problem_is_reported_at_once():
    found = problems({"max_steps": 0, "optim": {"lr": -1, "betas": [0.9, 0.98]}, "batching": {"max_tokens": 0},
                      "validation": {"metric": "rouge"}, "bogus": 1, "model": {"heads": 0, "colour": "red"}})
    text = "\n".join(found)
    for expected in ("max_steps", "optim.lr", "batching.max_tokens", "validation.metric", "bogus",
                     "model.heads", "model.colour"):
        assert expected in text, (expected, found)
    assert len(found) >= 7


def test_unknown_preset_lists_the_valid_ones():
    (problem,) = problems({"preset": "transformer-huge"})
    assert "transformer-huge" in problem
    for name in ("transformer-base", "transformer-small", "transformer-tiny", "lstm-attention"):
        assert name in problem


def test_unknown_key_lists_the_valid_ones():
    (problem,) = problems({"optim": {"learning_rate": 1e-3}})
    assert "optim.learning_rate" in problem and "lr" in problem and "clip_norm" in problem


def test_exponent_floats_without_a_dot_are_floats():
    from s2s_core.config import parse_overrides

    train, _ = resolve(parse_overrides(["optim.lr=2e-3", "optim.eps=1E-9"]))
    assert (train.optim.lr, train.optim.eps) == (2e-3, 1e-9)
    assert "`optim.lr` must be float, but is 'fast'" in problems(parse_overrides(["optim.lr=fast"]))[0]
