"""Which tokenizer differences make `init_from` refuse a dataset (no Ray, no Prefect)."""

from __future__ import annotations

from pipelines.train.init_from import different_tokenizer_files

OURS = {"tokenizer/spm.model": "a1", "tokenizer/spm.vocab": "b2", "tokenizer/settings.json": "c3"}
MARIAN = {"tokenizer/source.spm": "d4", "tokenizer/target.spm": "e5", "tokenizer/vocab.json": "f6",
          "tokenizer/settings.json": "a7"}


def test_the_same_files_pass_and_another_tokenizer_is_named():
    assert different_tokenizer_files(OURS, dict(OURS), imported=False) == []
    assert different_tokenizer_files(MARIAN, dict(MARIAN), imported=True) == []
    assert different_tokenizer_files(OURS, MARIAN, imported=True)[0] == "tokenizer/settings.json"
    assert different_tokenizer_files(OURS, MARIAN, imported=False)[0] == "tokenizer/source.spm"


def test_our_settings_may_differ_but_an_imported_ones_may_not():
    """Ours records how it was trained; an imported one orders the ids and holds the row templates
    (another target language of the same checkpoint has the same model files)."""
    assert different_tokenizer_files(OURS, OURS | {"tokenizer/settings.json": "zz"}, imported=False) == []
    other_language = MARIAN | {"tokenizer/settings.json": "zz"}
    assert different_tokenizer_files(MARIAN, other_language, imported=True) == ["tokenizer/settings.json"]
