"""Numbers in configs: every float field is finite (one rule, in `s2s_core.config`), and the
options that allocate or go into fixed-width integers have upper bounds."""

from __future__ import annotations

import pytest

from s2s_core.config import at_most, build, parse_overrides
from s2s_core.data.config import PrepareConfig
from s2s_core.errors import ConfigError
from s2s_core.generation.config import GenerationConfig, resolve_generation
from s2s_core.models import model_config
from s2s_core.training import config as train_config


def problems_of(cls, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(cls, parse_overrides(list(overrides)))
    return info.value.problems


@pytest.mark.parametrize("cls, override, shown", [
    (PrepareConfig, "shards.chunk_mb=.inf", "inf"),
    (PrepareConfig, "shards.input_mb_per_shard=.inf", "inf"),
    (PrepareConfig, "clean.max_length_ratio=.inf", "inf"),
    (PrepareConfig, "shards.chunk_mb=1e400", "1e400"),  # YAML reads it as a string; float() gives inf
    (GenerationConfig, "max_len_a=.inf", "inf"),
    (GenerationConfig, "max_len_a=.nan", "nan"),
    (GenerationConfig, "length_penalty=.nan", "nan"),
    (GenerationConfig, "temperature=.nan", "nan"),
    (GenerationConfig, "length_penalty=.inf", "inf"),
])
def test_a_float_that_is_not_finite_is_one_problem_naming_the_field(cls, override, shown):
    field = override.split("=")[0]
    assert problems_of(cls, override) == [f"`{field}` must be a finite number, but is {shown}"]


def test_an_int_too_large_for_a_float_is_not_finite():
    (problem,) = problems_of(GenerationConfig, "max_len_a=" + "9" * 400)
    assert problem.startswith("`max_len_a` must be a finite number, but is 999")


def test_a_range_check_of_the_section_replaces_the_generic_message():
    # NaN fails `must be in [0, 1)` too: the range says more than "finite", so only it is kept.
    assert problems_of(PrepareConfig, "split.valid_fraction=.nan") == [
        "`split.valid_fraction` must be in [0, 1), but is nan"]


def test_finite_floats_and_ints_for_floats_are_still_accepted():
    config = build(PrepareConfig, parse_overrides(["shards.chunk_mb=4", "clean.max_length_ratio=2.5"]))
    assert config.shards.chunk_mb == 4.0 and type(config.shards.chunk_mb) is float
    assert build(GenerationConfig, parse_overrides(["max_len_a=1e-3"])).max_len_a == 0.001


def test_training_and_model_floats_are_checked_by_the_same_rule():
    with pytest.raises(ConfigError) as info:
        train_config.resolve({"optim": {"lr": float("inf")}, "model": {"dropout": float("nan")}})
    problems = info.value.problems
    assert "`optim.lr` must be a finite number, but is inf" in problems
    assert "`model.dropout` must be in [0, 1), but is nan" in problems
    with pytest.raises(ConfigError, match="`dropout` must be in"):
        model_config("transformer-tiny", {"dropout": float("inf")})


@pytest.mark.parametrize("overrides, message", [
    (["beam_size=100000"], "`beam_size` must be <= 256, but is 100000"),
    (["beam_size=300", "nbest=300"], "`nbest` must be <= 256, but is 300"),
    (["seed=100000000000000000000000"], "`seed` must be in [0, 2**64), but is 100000000000000000000000"),
    (["seed=-1"], "`seed` must be in [0, 2**64), but is -1"),
    (["max_len_b=100000000000000000000"], "`max_len_b` must be <= 2147483647"),
    (["max_length=100000000000000000000"], "`max_length` must be <= 2147483647"),
    (["beam_size=256", "max_tokens=100000"], "`beam_size` 256 with `max_tokens` 100000 needs up to 159.6 GB"),
])
def test_decoding_options_have_upper_bounds(overrides, message):
    with pytest.raises(ConfigError) as info:
        resolve_generation(None, overrides)
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems


def test_the_search_estimate_accepts_every_preset_and_wide_beams_on_default_batches():
    for preset in ("translate", "summarize", "summarize-short", "summarize-long"):
        resolve_generation(None, [f"preset={preset}"])
    assert resolve_generation(None, ["beam_size=256"]).beam_size == 256  # max_tokens 4096: 6.5 GB at worst


@pytest.mark.parametrize("override, message", [
    ("tokenizer.vocab_size=10000000000", "`tokenizer.vocab_size` must be <= 1000000"),
    ("tokenizer.threads=100000", "`tokenizer.threads` must be <= 1024"),
    ("tokenizer.max_sentence_chars=1000000000", "`tokenizer.max_sentence_chars` must be <= 1000000"),
    ("tokenizer.seed=-1", "`tokenizer.seed` must be in [0, 4294967295], but is -1"),
    ("tokenizer.seed=1099511627776", "`tokenizer.seed` must be in [0, 4294967295]"),
    ("tokenizer.sample_pairs=10000000000", "`tokenizer.sample_pairs` must be <= 2147483647"),
    ("clean.max_chars=1000000000000000000000000000000", "`clean.max_chars` must be <= 2147483647"),
    ("clean.ratio_min_chars=10000000000", "`clean.ratio_min_chars` must be <= 2147483647"),
    ("split.valid_rows=10000000000", "`split.valid_rows` must be <= 2147483647"),
])
def test_prepare_counts_have_upper_bounds(override, message):
    (problem,) = problems_of(PrepareConfig, override)
    assert problem.startswith(message)


def test_at_most_names_each_field_above_the_bound():
    config = GenerationConfig(beam_size=5, nbest=9)
    assert at_most(config, 4, "beam_size", "nbest", "max_len_b") == [
        "`beam_size` must be <= 4, but is 5", "`nbest` must be <= 4, but is 9", "`max_len_b` must be <= 4, but is 10"]
