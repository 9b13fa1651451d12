"""Corpus scores equal sacrebleu's own on real sentences, with its signatures."""

from __future__ import annotations

import pytest
import sacrebleu

from s2s_core.metrics import corpus_scores, paired_bootstrap, translation_scores
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


SUMMARY_PAIRS = [line.split("\t") for line in
                 (SAMPLE.parent / "summarization-en" / "test.tsv").read_text(encoding="utf-8").splitlines()[:100]]
SYNOPSES = [synopsis for _, synopsis in SUMMARY_PAIRS]
# A lead baseline: the description's first eight words stand for a summary.
LEADS = [" ".join(description.split()[:8]) for description, _ in SUMMARY_PAIRS]


def test_rouge_equals_rouge_score_with_stemming_on_real_summaries():
    from rouge_score import rouge_scorer

    scores = corpus_scores(LEADS, SYNOPSES, ["rouge"])
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    by_sentence = [scorer.score(synopsis, lead) for lead, synopsis in zip(LEADS, SYNOPSES)]
    for kind in ("rouge1", "rouge2", "rougeL"):
        expected = sum(row[kind].fmeasure for row in by_sentence) / len(by_sentence) * 100
        assert scores[kind] == round(expected, 2)
    assert 5 < scores["rouge2"] < scores["rouge1"] < 60
    assert scores["output_words"] == 8.0 and 3 < scores["reference_words"] < 12
    assert scores["signature"]["rouge"].startswith("rouge-score:0.1.2|stemmer:porter|f1")
    # Stemming on: inflections match their stems.
    assert corpus_scores(["cats running"], ["cat runs"], ["rouge"])["rouge1"] == 100.0


def test_rouge_bootstrap_interval_is_reproducible():
    first = corpus_scores(LEADS, SYNOPSES, ["rouge"], bootstrap=300)
    assert 0 < first["rouge1_ci95"] < 15 and first == corpus_scores(LEADS, SYNOPSES, ["rouge"], bootstrap=300)


def test_paired_bootstrap_tells_a_real_difference_from_none():
    same = paired_bootstrap(HYPOTHESES, HYPOTHESES, REFERENCES, ["bleu", "chrf"], resamples=200)
    assert same["bleu"]["delta"] == 0 and same["bleu"]["p_value"] > 0.5
    better = paired_bootstrap(HYPOTHESES, REFERENCES, REFERENCES, ["bleu", "chrf"], resamples=200)
    assert better["bleu"]["candidate"] == 100.0 and better["bleu"]["delta"] > 5
    assert better["bleu"]["p_value"] < 0.05 and better["chrf"]["p_value"] < 0.05
    assert better["bleu"]["baseline"] == translation_scores(HYPOTHESES, REFERENCES)["bleu"]

    shorter = [" ".join(lead.split()[:3]) for lead in LEADS]
    rouge = paired_bootstrap(shorter, LEADS, SYNOPSES, ["rouge"], resamples=300)
    assert set(rouge) == {"rouge1", "rouge2", "rougeL"}
    assert rouge["rouge1"]["baseline"] == corpus_scores(shorter, SYNOPSES, ["rouge"])["rouge1"]
    assert rouge == paired_bootstrap(shorter, LEADS, SYNOPSES, ["rouge"], resamples=300)  # seeded
    tie = paired_bootstrap(LEADS, LEADS, SYNOPSES, ["rouge"], resamples=300)
    assert tie["rouge1"]["delta"] == 0 and tie["rouge1"]["p_value"] == 1.0


def test_scoring_rouge_leaves_the_root_logger_alone():
    import logging

    before = list(logging.root.handlers)
    corpus_scores(LEADS[:3], SYNOPSES[:3], ["rouge"])
    assert logging.root.handlers == before


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'meteor'"):
        corpus_scores(["a"], ["a"], ["meteor"])
