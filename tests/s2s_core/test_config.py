"""s2s_core.config (build / parse_overrides / load_yaml / merge) and the PrepareConfig checks."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from s2s_core.config import build, load_yaml, merge, parse_overrides, to_dict
from s2s_core.data.config import (
    CleanConfig,
    PrepareConfig,
    ReaderConfig,
    ShardConfig,
    SplitConfig,
    TokenizerConfig,
)
from s2s_core.errors import ConfigError, S2SError


# Small config classes of our own, to exercise build() on every kind of field it supports.
@dataclass(kw_only=True)
class Inner:
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    limit: int | None = None

    def problems(self) -> list[str]:
        return [f"`rate` must be <= 1, but is {self.rate}"] if self.rate > 1 else []


@dataclass(kw_only=True)
class Outer:
    name: str = "x"
    count: int = 1
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def valid_keys(cls) -> str:
    return ", ".join(sorted(f.name for f in dataclasses.fields(cls)))


# The split sum check's wording (backticks may wrap both names or each one).
SUM_CHECK = re.compile(r"^`split\.valid_fraction \+ test_fraction` must be below 1, but is ")


def build_prepare(*overrides: str) -> PrepareConfig:
    return build(PrepareConfig, parse_overrides(list(overrides)))


# ---------------------------------------------------------------- parse_overrides


def test_parse_overrides_nested_dotted_keys_and_yaml_scalars():
    tree = parse_overrides(["a.b.c=1", "a.b.d=x", "a.e=true", "f=2.5", "g=null", "h=", "i=[1, 2]", " j =3"])
    assert tree == {"a": {"b": {"c": 1, "d": "x"}, "e": True}, "f": 2.5, "g": None, "h": "", "i": [1, 2], "j": 3}


def test_parse_overrides_value_may_contain_equals_sign():
    assert parse_overrides(["a=b=c"]) == {"a": "b=c"}


def test_parse_overrides_later_value_wins():
    assert parse_overrides(["a.b=1", "a.b=2"]) == {"a": {"b": 2}}


def test_parse_overrides_reports_every_malformed_item_at_once():
    with pytest.raises(ConfigError, match=r"2 problems.*'novalue'.*'=5'") as info:
        parse_overrides(["novalue", "ok=1", "=5"])
    assert len(info.value.problems) == 2
    assert all("must look like key=value" in p for p in info.value.problems)


def test_parse_overrides_conflicting_scalar_and_section_is_a_config_error():
    with pytest.raises(ConfigError, match="a"):
        parse_overrides(["a=1", "a.b=2"])


def test_parse_overrides_invalid_yaml_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"x"):
        parse_overrides(["x=[1,"])


# ---------------------------------------------------------------- merge


def test_merge_is_deep_and_overlay_wins_without_mutating_inputs():
    base = {"a": {"b": 1, "c": 2}, "d": 3, "e": {"f": 1}}
    overlay = {"a": {"c": 20, "g": 30}, "d": {"x": 1}, "e": 5}
    merged = merge(base, overlay)
    assert merged == {"a": {"b": 1, "c": 20, "g": 30}, "d": {"x": 1}, "e": 5}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3, "e": {"f": 1}}
    assert overlay == {"a": {"c": 20, "g": 30}, "d": {"x": 1}, "e": 5}


def test_merge_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  seed: 4\n  test_fraction: 0.2\nclean:\n  max_chars: 50\n")
    config = build(PrepareConfig, merge(load_yaml(path), parse_overrides(["split.seed=9"])))
    assert (config.split.seed, config.split.test_fraction, config.clean.max_chars) == (9, 0.2, 50)
    assert config.split.valid_fraction == SplitConfig().valid_fraction  # untouched default


# ---------------------------------------------------------------- build: types


def test_build_defaults_from_empty_mapping():
    assert build(PrepareConfig, {}) == PrepareConfig()
    assert build(Outer, {}) == Outer()


def test_build_nested_values_round_trip_through_to_dict():
    config = build_prepare("reader.format=jsonl", "tokenizer.vocab_size=500", "shards.num_shards=7")
    assert config.reader.format == "jsonl"
    assert config.tokenizer.vocab_size == 500
    assert config.shards.num_shards == 7
    assert build(PrepareConfig, to_dict(config)) == config


def test_build_int_is_coerced_to_float():
    config = build_prepare("split.valid_fraction=0", "shards.chunk_mb=4")
    assert type(config.split.valid_fraction) is float and config.split.valid_fraction == 0.0
    assert type(config.shards.chunk_mb) is float and config.shards.chunk_mb == 4.0


def test_build_float_is_not_coerced_to_int():
    with pytest.raises(ConfigError, match=r"`tokenizer\.vocab_size` must be int, but is 500\.5") as info:
        build_prepare("tokenizer.vocab_size=500.5")
    assert len(info.value.problems) == 1


@pytest.mark.parametrize("value", ["true", "false"])
def test_build_bool_is_not_an_int_nor_a_float(value):
    with pytest.raises(ConfigError, match=r"`split\.seed` must be int"):
        build_prepare(f"split.seed={value}")
    with pytest.raises(ConfigError, match=r"`split\.test_fraction` must be float"):
        build_prepare(f"split.test_fraction={value}")


def test_build_wrong_types():
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": 3, "count": "many", "flag": "yes"})
    assert info.value.problems == [
        "`name` must be str, but is 3",
        "`count` must be int, but is 'many'",
        "`flag` must be bool, but is 'yes'",
    ]


def test_build_optional_accepts_null_and_checks_the_inner_type():
    assert build_prepare("clean.max_chars=null").clean.max_chars is None
    assert build_prepare("clean.max_length_ratio=null").clean.max_length_ratio is None
    assert build_prepare("clean.max_length_ratio=5").clean.max_length_ratio == 5.0
    with pytest.raises(ConfigError, match=r"`clean\.max_chars` must be int, but is 'lots'"):
        build_prepare("clean.max_chars=lots")


def test_build_null_for_a_non_optional_field_is_a_problem():
    with pytest.raises(ConfigError, match=r"`split\.seed` must be int, but is None"):
        build_prepare("split.seed=null")


def test_build_literal_values():
    for fmt in ("auto", "tsv", "jsonl", "parquet", "text"):
        assert build_prepare(f"reader.format={fmt}").reader.format == fmt
    with pytest.raises(ConfigError) as info:
        build_prepare("reader.format=csv")
    assert info.value.problems == [
        "`reader.format` must be one of 'auto', 'tsv', 'jsonl', 'parquet', 'text', but is 'csv'"]
    with pytest.raises(ConfigError, match=r"`tokenizer\.model_type` must be one of 'unigram', 'bpe', but is 'BPE'"):
        build_prepare("tokenizer.model_type=BPE")


def test_build_list_field_wraps_a_scalar_and_checks_each_item():
    assert build(Outer, {"tags": ["a", "b"]}).tags == ["a", "b"]
    assert build(Outer, {"tags": "solo"}).tags == ["solo"]
    with pytest.raises(ConfigError) as info:
        build(Outer, {"tags": ["a", 2, "c", 4.0]})
    assert info.value.problems == ["`tags[1]` must be str, but is 2", "`tags[3]` must be str, but is 4.0"]


def test_build_unknown_keys_list_the_valid_keys():
    with pytest.raises(ConfigError) as info:
        build(PrepareConfig, {"reader": {"fromat": "tsv"}, "splits": {}})
    problems = info.value.problems
    assert f"unknown key `reader.fromat` (valid keys: {valid_keys(ReaderConfig)})" in problems
    assert f"unknown key `splits` (valid keys: {valid_keys(PrepareConfig)})" in problems
    assert len(problems) == 2
    # the listed keys are exactly the dataclass fields
    assert "format, keep_metadata, source_field, source_lang, target_field, target_lang" == valid_keys(ReaderConfig)


def test_build_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"`reader` must be a mapping, not 5"):
        build(PrepareConfig, {"reader": 5})
    with pytest.raises(ConfigError, match=r"`inner` must be a mapping, not \['x'\]"):
        build(Outer, {"inner": ["x"]})


def test_build_reports_all_problems_of_several_sections_in_one_error():
    with pytest.raises(ConfigError) as info:
        build_prepare("reader.format=csv", "reader.colour=red", "clean.max_chars=many",
                      "split.seed=abc", "shards.compression=lz4", "tokenizer.shared=maybe", "extra=1")
    problems = info.value.problems
    assert len(problems) == 7
    sections = ("reader.format", "reader.colour", "clean.max_chars", "split.seed", "shards.compression",
                "tokenizer.shared", "extra")
    for name in sections:
        assert sum(f"`{name}`" in p for p in problems) == 1, name
    message = str(info.value)
    assert message.startswith("invalid configuration (7 problems): ")
    assert message.count("; ") == 6
    assert "\n" not in message


def test_config_error_message_for_one_problem():
    with pytest.raises(ConfigError, match=r"^invalid configuration: `split\.seed` must be in \[0, 2\*\*64\), but is -1$") as info:
        build_prepare("split.seed=-1")
    assert info.value.problems == ["`split.seed` must be in [0, 2**64), but is -1"]
    assert isinstance(info.value, S2SError)


def test_build_nested_custom_section_check_gets_the_path_prefix():
    with pytest.raises(ConfigError) as info:
        build(Outer, {"inner": {"rate": 2}})
    assert info.value.problems == ["`inner.rate` must be <= 1, but is 2.0"]
    with pytest.raises(ConfigError, match=r"`inner\.mode` must be one of 'a', 'b', but is 'c'"):
        build(Outer, {"inner": {"mode": "c"}})


# ---------------------------------------------------------------- PrepareConfig checks


def test_prepare_defaults_have_no_problems():
    config = PrepareConfig()
    for section in (config.reader, config.clean, config.split, config.shards, config.tokenizer):
        assert section.problems() == []


SECTION_PROBLEMS = ["`tokenizer.vocab_size` must be >= 16, but is 0",
                    "`clean.max_chars` must be >= 1 (or null for no limit), but is 0"]


@pytest.mark.parametrize("fraction, split_problems", [
    ("-0.5", ["`split.valid_fraction` must be in [0, 1), but is -0.5"]),
    # 1.5 is outside [0, 1) *and* 1.5 + 0.01 >= 1: two problems for split alone.
    ("1.5", ["`split.valid_fraction` must be in [0, 1), but is 1.5",
             "`split.valid_fraction + test_fraction` must be below 1, but is 1.51"]),
])
def test_prepare_value_checks_of_three_sections_together(fraction, split_problems):
    with pytest.raises(ConfigError) as info:
        build_prepare(f"split.valid_fraction={fraction}", "tokenizer.vocab_size=0", "clean.max_chars=0")
    expected = split_problems + SECTION_PROBLEMS
    assert sorted(info.value.problems) == sorted(expected)
    assert str(info.value).startswith(f"invalid configuration ({len(expected)} problems): ")


@pytest.mark.parametrize("overrides, fragment", [
    (["reader.source_field=text", "reader.target_field=text"], "`reader.source_field` and `target_field` must differ"),
    (["reader.source_lang=en", "reader.target_lang=en"], "`reader.source_lang` and `target_lang` must differ"),
    (["clean.max_tokens=0"], "`clean.max_tokens` must be >= 1"),
    (["clean.max_length_ratio=0.5"], "`clean.max_length_ratio` must be >= 1"),
    (["clean.ratio_min_chars=-1"], "`clean.ratio_min_chars` must be >= 0"),
    (["split.test_fraction=-0.1"], "`split.test_fraction` must be in [0, 1)"),
    (["split.valid_rows=-1"], "`split.valid_rows` must be >= 0"),
    (["split.test_rows=-3"], "`split.test_rows` must be >= 0"),
    (["shards.input_mb_per_shard=0"], "`shards.input_mb_per_shard` must be > 0"),
    (["shards.chunk_mb=-1"], "`shards.chunk_mb` must be > 0"),
    (["shards.num_shards=0"], "`shards.num_shards` must be in [1, 100000]"),
    (["shards.num_shards=100001"], "`shards.num_shards` must be in [1, 100000]"),
    (["tokenizer.vocab_size=15"], "`tokenizer.vocab_size` must be >= 16"),
    (["tokenizer.character_coverage=0.5"], "`tokenizer.character_coverage` must be in [0.9, 1.0]"),
    (["tokenizer.character_coverage=1.01"], "`tokenizer.character_coverage` must be in [0.9, 1.0]"),
    (["tokenizer.sample_pairs=0"], "`tokenizer.sample_pairs` must be >= 1"),
    (["tokenizer.max_sentence_chars=0"], "`tokenizer.max_sentence_chars` must be >= 1"),
    (["tokenizer.threads=0"], "`tokenizer.threads` must be >= 1"),
])
def test_prepare_each_value_check(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        build_prepare(*overrides)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(fragment)


@pytest.mark.parametrize("overrides", [["split.valid_fraction=0.6", "split.test_fraction=0.4"],
                                       ["split.valid_fraction=0.5", "split.test_fraction=0.7"]])
def test_prepare_split_fractions_summing_to_one_or_more(overrides):
    with pytest.raises(ConfigError) as info:
        build_prepare(*overrides)
    assert len(info.value.problems) == 1
    assert SUM_CHECK.search(info.value.problems[0])


def test_prepare_test_fraction_of_one_fails_range_and_sum_checks():
    with pytest.raises(ConfigError) as info:
        build_prepare("split.test_fraction=1")
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0] == "`split.test_fraction` must be in [0, 1), but is 1.0"
    assert SUM_CHECK.search(problems[1])


@pytest.mark.parametrize("overrides", [
    ["split.valid_fraction=0", "split.test_fraction=0"],
    ["split.valid_fraction=0.5", "split.test_fraction=0.49"],
    ["shards.num_shards=1"], ["shards.num_shards=100000"],
    ["tokenizer.vocab_size=16"], ["tokenizer.character_coverage=0.9"],
    ["clean.max_length_ratio=1"], ["clean.ratio_min_chars=0"], ["clean.max_chars=1", "clean.max_tokens=1"],
])
def test_prepare_boundary_values_are_accepted(overrides):
    build_prepare(*overrides)


def test_type_problems_and_value_problems_of_other_sections_reported_together():
    with pytest.raises(ConfigError) as info:
        build_prepare("split.seed=abc", "tokenizer.vocab_size=0", "reader.bogus=1", "clean.max_chars=0")
    problems = info.value.problems
    assert len(problems) == 4
    assert "`split.seed` must be int, but is 'abc'" in problems
    assert "`tokenizer.vocab_size` must be >= 16, but is 0" in problems
    assert any(p.startswith("unknown key `reader.bogus`") for p in problems)
    assert any(p.startswith("`clean.max_chars` must be >= 1") for p in problems)


def test_mistyped_value_is_reported_once_and_does_not_crash_the_checks():
    for override in ("tokenizer.vocab_size=abc", "split.valid_fraction=half", "shards.num_shards=[1]"):
        with pytest.raises(ConfigError) as info:
            build_prepare(override)
        assert len(info.value.problems) == 1, info.value.problems
        assert "must be" in info.value.problems[0]


@pytest.mark.parametrize("name", ["shards.input_mb_per_shard", "shards.chunk_mb", "clean.max_length_ratio"])
def test_nan_is_rejected(name):
    assert math.isnan(parse_overrides([f"{name}=.nan"])[name.split(".")[0]][name.split(".")[1]])
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        build_prepare(f"{name}=.nan")


def test_nan_fraction_is_rejected():
    with pytest.raises(ConfigError, match=r"`split\.valid_fraction` must be in \[0, 1\), but is nan"):
        build_prepare("split.valid_fraction=.nan")


def test_section_classes_are_kw_only():
    for cls in (ReaderConfig, CleanConfig, SplitConfig, ShardConfig, TokenizerConfig, PrepareConfig):
        with pytest.raises(TypeError):
            cls(1)


def test_load_yaml_then_build_reports_problems_with_paths(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  valid_fraction: 2\n  colour: blue\n")
    with pytest.raises(ConfigError) as info:
        build(PrepareConfig, load_yaml(path))
    problems = info.value.problems
    assert f"unknown key `split.colour` (valid keys: {valid_keys(SplitConfig)})" in problems
    assert "`split.valid_fraction` must be in [0, 1), but is 2.0" in problems
    assert sum(SUM_CHECK.search(p) is not None for p in problems) == 1
    assert len(problems) == 3
