"""Corpus scores equal sacrebleu's own on real sentences, with its signatures."""

from __future__ import annotations

import pytest
import sacrebleu

from s2s_core.metrics import translation_scores
from tests.conftest import SAMPLE

PAIRS = [line.split("\t")[:2] for line in (SAMPLE / "dev.tsv").read_text(encoding="utf-8").splitlines()[:200]]
REFERENCES = [target for _, target in PAIRS]
# Imperfect hypotheses: every third reference loses its last word, every fifth is replaced.
HYPOTHESES = [REFERENCES[(i + 1) % len(REFERENCES)] if i % 5 == 0 else " ".join(r.split()[:-1]) if i % 3 == 0 else r
              for i, r in enumerate(REFERENCES)]


def test_scores_equal_sacrebleu_on_real_sentences():
    scores = translation_scores(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score, 2)
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score, 2)
    assert 30 < scores["bleu"] < 95 and scores["sentences"] == 200
    assert scores["signature"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert scores["signature"]["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")


def test_perfect_output_scores_100_and_bootstrap_gives_an_interval():
    assert translation_scores(REFERENCES, REFERENCES)[("bleu")] == 100.0
    scores = translation_scores(HYPOTHESES, REFERENCES, bootstrap=200)
    assert 0 < scores["bleu_ci95"] < 20 and 0 < scores["chrf_ci95"] < 20
    assert "|bs:200|" in scores["signature"]["bleu"]
    assert translation_scores(HYPOTHESES, REFERENCES, bootstrap=200) == scores  # sacrebleu seeds its resampling


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses for 3 references"):
        translation_scores(["a", "b"], ["a", "b", "c"])
