"""A config field spelled by another key (`tokenizer.from`, a Python keyword, for `tokenizer.reuse`)."""

from __future__ import annotations

import pytest

from s2s_core.config import build, to_dict
from s2s_core.data.config import PrepareConfig
from s2s_core.errors import ConfigError


def test_tokenizer_from_is_the_reuse_setting():
    config = build(PrepareConfig, {"tokenizer": {"from": "s3://models/opus-mt-en-it"}})
    assert config.tokenizer.reuse == "s3://models/opus-mt-en-it"
    assert build(PrepareConfig, {"tokenizer": {"reuse": "pkg"}}).tokenizer.reuse == "pkg"
    # Recorded under the field's name: datasets prepared before the alias keep their ids.
    assert to_dict(config)["tokenizer"]["reuse"] == "s3://models/opus-mt-en-it"


def test_both_spellings_at_once_and_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"`tokenizer.from` and `tokenizer.reuse` are the same setting: give one"):
        build(PrepareConfig, {"tokenizer": {"from": "a", "reuse": "b"}})
    with pytest.raises(ConfigError, match=r"unknown key `tokenizer.form` \(valid keys: .*from.*reuse"):
        build(PrepareConfig, {"tokenizer": {"form": "a"}})
