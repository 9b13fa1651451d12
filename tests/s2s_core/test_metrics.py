"""Corpus scores equal sacrebleu's own on real sentences, with its signatures."""

from __future__ import annotations

import pytest
import sacrebleu

from s2s_core.metrics import bleu_chrf, corpus_scores, paired_bootstrap, translation_scores
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


TEST_PAIRS = [line.split("\t")[:2] for line in (SAMPLE / "test.tsv").read_text(encoding="utf-8").splitlines()]
TEST_REFERENCES = [target for _, target in TEST_PAIRS]
# Three kinds of imperfect output: a dropped last word, a sentence's first half, the English source.
TEST_OUTPUTS = {"dropped word": [" ".join(r.split()[:-1]) for r in TEST_REFERENCES],
                "first half": [" ".join(r.split()[:max(1, len(r.split()) // 2)]) for r in TEST_REFERENCES],
                "source": [source for source, _ in TEST_PAIRS]}


@pytest.mark.parametrize("output", sorted(TEST_OUTPUTS))
def test_bleu_chrf_is_sacrebleus_public_corpus_score_on_the_test_set(output):
    hypotheses = TEST_OUTPUTS[output]
    bleu = sacrebleu.corpus_bleu(hypotheses, [TEST_REFERENCES]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [TEST_REFERENCES]).score
    assert len(hypotheses) == 500 and 0 < bleu < 95
    assert bleu_chrf(hypotheses, TEST_REFERENCES, ndigits=None) == {"bleu": bleu, "chrf": chrf}
    assert bleu_chrf(hypotheses, TEST_REFERENCES, ndigits=3) == {"bleu": round(bleu, 3), "chrf": round(chrf, 3)}
    assert bleu_chrf(hypotheses, TEST_REFERENCES) == {k: translation_scores(hypotheses, TEST_REFERENCES)[k]
                                                      for k in ("bleu", "chrf")}


def test_paired_bleu_and_chrf_are_sacrebleus_own_paired_bootstrap():
    """The public path: the same scores and p-values as sacrebleu's `PairedTest`, seed and all."""
    from sacrebleu.significance import PairedTest

    candidate = TEST_OUTPUTS["first half"][:120]
    baseline, references = TEST_OUTPUTS["dropped word"][:120], TEST_REFERENCES[:120]
    ours = paired_bootstrap(baseline, candidate, references, ["bleu", "chrf"], resamples=100)
    for name, metric in (("bleu", sacrebleu.BLEU()), ("chrf", sacrebleu.CHRF())):
        _, results = PairedTest([("b", baseline), ("c", candidate)], {name: metric}, [references],
                                test_type="bs", n_samples=100)()
        (base, cand), = (scores for key, scores in results.items() if key != "System")
        assert ours[name]["baseline"] == round(metric.corpus_score(baseline, [references]).score, 2)
        assert (ours[name]["candidate"], ours[name]["p_value"]) == (round(cand.score, 2), round(cand.p_value, 4))


def test_bootstrap_intervals_and_p_values_are_pinned():
    """Fixed seeds: the same numbers every run and every release of this code."""
    scores = translation_scores(HYPOTHESES, REFERENCES, bootstrap=200)
    assert {k: scores[k] for k in ("bleu", "bleu_ci95", "chrf", "chrf_ci95")} == {
        "bleu": 76.02, "bleu_ci95": 6.87, "chrf": 80.4, "chrf_ci95": 5.1}
    assert scores["signature"]["bleu"].startswith("nrefs:1|bs:200|seed:12345|case:mixed|eff:no|tok:13a|smooth:exp|")
    ten_fixed = [r if i < 10 else h for i, (h, r) in enumerate(zip(HYPOTHESES, REFERENCES))]
    assert paired_bootstrap(HYPOTHESES, ten_fixed, REFERENCES, ["bleu", "chrf"], resamples=300) == {
        "bleu": {"baseline": 76.02, "candidate": 77.3, "delta": 1.28, "p_value": 0.0698},
        "chrf": {"baseline": 80.4, "candidate": 81.39, "delta": 1.0, "p_value": 0.0631}}


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses for 3 references"):
        translation_scores(["a", "b"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        bleu_chrf(["a", "b"], ["a"])


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
