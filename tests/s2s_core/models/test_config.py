"""Model configs: presets, overrides, every problem reported at once, loading from plain data."""

from __future__ import annotations

import re

import pytest

from s2s_core.config import to_dict
from s2s_core.errors import ConfigError
from s2s_core.models import (
    PRESETS,
    LSTMConfig,
    TransformerConfig,
    build_model,
    config_from_dict,
    model_config,
)


def problems_of(preset: str, overrides: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        model_config(preset, overrides)
    return info.value.problems


def test_presets_have_the_documented_sizes():
    base, small, tiny = (model_config(f"transformer-{n}") for n in ("base", "small", "tiny"))
    assert (base.encoder_layers, base.decoder_layers, base.d_model, base.heads, base.ffn_dim, base.dropout) \
        == (6, 6, 512, 8, 2048, 0.1)
    assert (small.encoder_layers, small.decoder_layers, small.d_model, small.heads, small.ffn_dim) \
        == (3, 3, 256, 4, 1024)
    assert (tiny.encoder_layers, tiny.d_model, tiny.heads, tiny.ffn_dim) == (2, 64, 4, 128)
    lstm, lstm_tiny = model_config("lstm-attention"), model_config("lstm-tiny")
    assert (lstm.layers, lstm.hidden_size, lstm.embed_dim, lstm.attention) == (2, 512, 512, "bahdanau")
    assert (lstm_tiny.layers, lstm_tiny.hidden_size, lstm_tiny.embed_dim) == (1, 64, 64)
    assert isinstance(base, TransformerConfig) and isinstance(lstm, LSTMConfig)
    assert base.src_vocab_size == base.tgt_vocab_size == 0  # filled in by the trainer


def test_overrides_apply_and_presets_stay_untouched():
    config = model_config("transformer-small", {"dropout": 0.3, "norm": "post", "src_vocab_size": 100,
                                                "tgt_vocab_size": 100})
    assert (config.dropout, config.norm, config.src_vocab_size) == (0.3, "post", 100)
    assert model_config("transformer-small").dropout == 0.1


def test_all_problems_are_reported_together():
    found = problems_of("transformer-tiny", {"d_model": 0, "dropout": 1.5, "heads": -1,
                                             "attention_dropout": float("nan"), "activation": "tanh"})
    assert found == [
        "`activation` must be one of 'relu', 'gelu', 'gelu-tanh', 'silu', but is 'tanh'",
        "`d_model` must be >= 1, but is 0",
        "`heads` must be >= 1, but is -1",
        "`dropout` must be in [0, 1), but is 1.5",
        "`attention_dropout` must be in [0, 1), but is nan",
    ]
    with pytest.raises(ConfigError, match=r"5 problems.*`d_model` must be >= 1, but is 0.*`dropout` must be in"):
        model_config("transformer-tiny", {"d_model": 0, "dropout": 1.5, "heads": -1,
                                          "attention_dropout": float("nan"), "activation": "tanh"})


def test_d_model_must_divide_into_heads():
    with pytest.raises(ConfigError, match=r"^invalid configuration: `d_model` must be divisible by `heads` \(4\), "
                                          r"but is 66$"):
        model_config("transformer-tiny", {"d_model": 66})


def test_lstm_problems():
    found = problems_of("lstm-tiny", {"hidden_size": 33, "layers": 0, "dropout": -0.1, "attention": "luong"})
    assert found == [
        "`attention` must be one of 'bahdanau', 'luong-general', 'luong-dot', but is 'luong'",
        "`layers` must be >= 1, but is 0",
        "`hidden_size` must be even and >= 2 (the encoder has hidden_size/2 per direction), but is 33",
        "`dropout` must be in [0, 1), but is -0.1",
    ]


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=re.escape(
            "unknown model preset 'transformer-huge' (valid presets: transformer-base, transformer-small, "
            "transformer-tiny, lstm-attention, lstm-tiny)")):
        model_config("transformer-huge")


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=re.escape(
            "unknown key `d_model` (valid keys: attention, dropout, embed_dim, family, hidden_size, layers, "
            "share_embeddings, src_vocab_size, tgt_vocab_size, tie_output)")):
        model_config("lstm-tiny", {"d_model": 64})


def test_shared_embeddings_need_equal_vocabularies():
    message = "`share_embeddings` needs `src_vocab_size` == `tgt_vocab_size`, but they are 100 and 90"
    for preset in ("transformer-tiny", "lstm-tiny"):
        assert problems_of(preset, {"src_vocab_size": 100, "tgt_vocab_size": 90}) == [message]
        config = model_config(preset, {"src_vocab_size": 100, "tgt_vocab_size": 90, "share_embeddings": False})
        assert config.src_vocab_size == 100


def test_vocabulary_sizes():
    assert problems_of("transformer-tiny", {"src_vocab_size": 3, "tgt_vocab_size": 3}) == [
        "`src_vocab_size` must be >= 4 (or 0: filled in from the tokenizer), but is 3",
        "`tgt_vocab_size` must be >= 4 (or 0: filled in from the tokenizer), but is 3",
    ]
    with pytest.raises(ConfigError, match=r"`src_vocab_size` must be set \(>= 4\) before building a model, but is 0"
                                          r".*`tgt_vocab_size` must be set"):
        build_model(model_config("transformer-tiny"))


def test_build_model_validates_configs_made_directly():
    with pytest.raises(ConfigError, match=r"`hidden_size` must be even"):
        build_model(LSTMConfig(src_vocab_size=10, tgt_vocab_size=10, hidden_size=7))


def test_wrong_family_for_the_preset():
    assert problems_of("transformer-tiny", {"family": "lstm"}) == [
        "`family` must be one of 'transformer', but is 'lstm'"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_round_trips_through_plain_data(preset):
    config = model_config(preset, {"src_vocab_size": 123, "tgt_vocab_size": 123})
    assert config_from_dict(to_dict(config)) == config


def test_config_from_dict_errors():
    with pytest.raises(ConfigError, match=r"`family` must be one of lstm, transformer, but is 'rnn'"):
        config_from_dict({"family": "rnn"})
    with pytest.raises(ConfigError, match=r"`family` must be one of lstm, transformer, but is None"):
        config_from_dict({"d_model": 8})
    with pytest.raises(ConfigError, match=r"must be a mapping, not list"):
        config_from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown key `d_model`"):
        config_from_dict({"family": "lstm", "d_model": 8})


def test_imported_model_options_are_checked():
    found = problems_of("transformer-tiny", {"src_vocab_size": 50, "tgt_vocab_size": 50, "decoder_start_id": 50,
                                             "position_offset": -1, "positions": "rotary"})
    assert found == [
        "`positions` must be one of 'sinusoidal', 'sinusoidal-halves', 'sinusoidal-fairseq', 'learned', but is "
        "'rotary'",
        "`position_offset` must be >= 0, but is -1",
        "`decoder_start_id` must be < `tgt_vocab_size` (50), but is 50",
    ]
