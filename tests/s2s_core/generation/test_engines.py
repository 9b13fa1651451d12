"""Engine choice and the CTranslate2 engine's option mapping, on a random transformer-tiny
package and its export (the trained-model parity test is tests/pipelines/test_export.py)."""

from __future__ import annotations

import shutil

import pytest

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.export.ct2 import EXPORT_DIR, export_ctranslate2
from s2s_core.generation import GenerationConfig, Translator
from s2s_core.package import load_package
from tests.s2s_core.conftest import read_pairs
from tests.s2s_core.test_ct2_export import make_package

pytest.importorskip("ctranslate2")

FIXED = {"max_len_a": 0, "max_len_b": 8, "min_length": 8}  # random weights: exactly 8 tokens each


@pytest.fixture(scope="module")
def exported(tokenizer_dir, tmp_path_factory):
    package = make_package(tmp_path_factory.mktemp("engines") / "pkg", tokenizer_dir, {})
    export_ctranslate2(load_package(package), package / EXPORT_DIR)
    return package


def run(package, **options):
    translator = Translator(load_package(package), GenerationConfig(**options), threads=1)
    return translator([s for s, _ in read_pairs(40)]), translator.engine.describe()


def test_both_engines_give_the_same_greedy_outputs_and_scores(exported):
    """Every output here runs into the length limit: ours ends it with EOS and scores that EOS,
    CTranslate2 cuts it, and the engine scores the cut output with EOS again. Greedy only:
    random weights give PAD and BOS enough probability to take beam slots in CTranslate2's
    search (ours forbids them), so beam parity is tested on a trained model."""
    ours, torch_engine = run(exported, beam_size=1, engine="torch", **FIXED)
    theirs, ct2_engine = run(exported, beam_size=1, engine="ctranslate2", **FIXED)
    assert (torch_engine["engine"], ct2_engine["engine"]) == ("torch", "ctranslate2")
    assert all(r.tokens == 8 for r in ours + theirs)
    assert [r.text for r in theirs] == [r.text for r in ours]
    assert [r.score for r in theirs] == pytest.approx([r.score for r in ours], abs=1e-4)


def test_nbest_lists_come_back_ranked_by_our_length_penalty(exported):
    result = run(exported, beam_size=4, nbest=4, engine="ctranslate2", length_penalty=1.0, max_len_b=6)[0][0]
    scores = [score for _, score in result.nbest]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True) and result.score == scores[0]


def test_auto_prefers_the_export_and_torch_without_one(exported, tmp_path):
    assert run(exported, **FIXED)[1]["engine"] == "ctranslate2"
    plain = tmp_path / "plain"
    shutil.copytree(exported, plain, ignore=shutil.ignore_patterns(EXPORT_DIR))
    assert run(plain, **FIXED)[1]["engine"] == "torch"
    with pytest.raises(CheckpointError, match=r"has no CTranslate2 export .*s2s export --model"):
        run(plain, engine="ctranslate2")


def test_compute_types_each_engine_can_run(exported):
    assert run(exported, engine="torch", compute_type="int8", **FIXED)[1]["compute_type"] == "int8"
    assert run(exported, engine="ctranslate2", compute_type="int8", **FIXED)[1]["compute_type"].startswith("int8")
    with pytest.raises(ConfigError, match="compute_type=bfloat16 needs engine=ctranslate2"):
        run(exported, engine="torch", compute_type="bfloat16")
