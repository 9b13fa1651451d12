"""load_yaml: config files, and the errors that name them."""

from __future__ import annotations

import pytest

from s2s_core.config import load_yaml
from s2s_core.errors import ConfigError


def test_load_yaml_mapping_and_empty_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("reader:\n  format: tsv\nsplit: {seed: 3}\n", encoding="utf-8")
    assert load_yaml(path) == {"reader": {"format": "tsv"}, "split": {"seed": 3}}
    assert load_yaml(str(path)) == load_yaml(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    assert load_yaml(empty) == {}


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_load_yaml_not_a_mapping_names_the_file(tmp_path, text, kind):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"config file {path} must hold a mapping, not {kind}$") as info:
        load_yaml(path)
    assert len(info.value.problems) == 1


def test_load_yaml_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("reader: [tsv\nsplit: {\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not valid YAML \(") as info:
        load_yaml(path)
    assert "\n" not in str(info.value)


def test_load_yaml_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope" / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"config file {path} does not exist"):
        load_yaml(path)


def test_load_yaml_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml"):
        load_yaml(path)
