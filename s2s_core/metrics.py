"""Corpus scores that compare with published numbers, always with a signature saying how they
were computed.

- BLEU and chrF: sacrebleu on detokenized text (its own tokenization), with its signatures.
- ROUGE-1/2/L: F1 x 100 from Google's `rouge-score` (the ROUGE-1.5.5 re-implementation), Porter
  stemming on; the corpus score is the mean over sentences, as rouge-score's aggregator reports it.
- A paired bootstrap test between two systems on the same references (Koehn, 2004).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest, Result

SACREBLEU_METRICS = {"bleu": BLEU, "chrf": CHRF}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
METRICS = ("bleu", "chrf", "rouge")
BOOTSTRAP_SEED = 12345  # sacrebleu's own seed: the same resamples every run
DEFAULT_METRICS = {"translate": ("bleu", "chrf"), "summarize": ("rouge",)}


def rouge_signature() -> str:
    return f"rouge-score:{version('rouge-score')}|stemmer:porter|f1|mean-of-sentences"


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], metrics: Sequence[str] = ("bleu", "chrf"),
                  bootstrap: int = 0) -> dict:
    """{'sentences', 'signature': {...}} plus, per metric: 'bleu', 'chrf', or 'rouge1', 'rouge2',
    'rougeL' with 'output_words', 'reference_words'. With `bootstrap` > 1 resamples, each score
    also has '<name>_ci95': the half-width of its 95% bootstrap interval."""
    _check_lengths(hypotheses, references)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r} (valid: {', '.join(METRICS)})")
    out: dict = {"sentences": len(hypotheses), "signature": {}}
    for name in metrics:
        if name == "rouge":
            out.update(_rouge_scores(hypotheses, references, bootstrap))
            out["signature"]["rouge"] = rouge_signature()
        else:
            scores, out["signature"][name] = _sacrebleu_score(name, hypotheses, references, bootstrap)
            out.update(scores)
    return out


def translation_scores(hypotheses: Sequence[str], references: Sequence[str], bootstrap: int = 0) -> dict:
    """BLEU and chrF (see `corpus_scores`)."""
    return corpus_scores(hypotheses, references, ("bleu", "chrf"), bootstrap)


def bleu_chrf(hypotheses: Sequence[str], references: Sequence[str], ndigits: int | None = 2) -> dict[str, float]:
    """{'bleu', 'chrf'}: sacrebleu's corpus BLEU and chrF (its default settings, one reference per
    sentence), rounded to `ndigits` decimals (None: unrounded).

    Raises:
        ValueError: not as many hypotheses as references.
    """
    _check_lengths(hypotheses, references)
    scores = {name: metric().corpus_score(list(hypotheses), [list(references)]).score
              for name, metric in SACREBLEU_METRICS.items()}
    return {name: float(score) if ndigits is None else round(score, ndigits) for name, score in scores.items()}


def _sacrebleu_score(name: str, hypotheses: Sequence[str], references: Sequence[str],
                     bootstrap: int) -> tuple[dict, str]:
    """({name: score[, name_ci95: half-width]}, signature); the signature records the resamples."""
    metric = SACREBLEU_METRICS[name]()
    if bootstrap <= 1:
        score = metric.corpus_score(list(hypotheses), [list(references)])
        return {name: round(score.score, 2)}, str(metric.get_signature())
    # sacrebleu's own 95% interval (its seed, its resamples): a paired test of the system alone,
    # which reports the baseline's score with its bootstrap interval.
    test = PairedTest([("output", list(hypotheses))], {name: metric}, [list(references)], test_type="bs",
                      n_samples=bootstrap)
    signatures, results = test()
    (key, signature), = signatures.items()
    result = results[key][0]  # the baseline's: the only system
    assert isinstance(result, Result) and result.ci is not None
    return {name: round(result.score, 2), f"{name}_ci95": round(float(result.ci), 2)}, str(signature)


def sentence_rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-sentence F1 x 100 for each of ROUGE_TYPES: {type: float array of shape [sentences]}."""
    from rouge_score.rouge_scorer import RougeScorer

    _absl_handler_on_process_stderr()
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    with _root_logging_untouched():
        rows = [scorer.score(reference, hypothesis) for hypothesis, reference in zip(hypotheses, references)]
    return {kind: np.array([row[kind].fmeasure * 100 for row in rows], dtype=np.float64) for kind in ROUGE_TYPES}


def _absl_handler_on_process_stderr() -> None:
    """rouge-score imports absl, whose logging handler keeps the `sys.stderr` of the moment of
    import, and closes it whenever logging is shut down or reconfigured (absl's handler closes
    any stream but the current sys.std* ones). When that stream was a replacement (pytest's
    capture, a notebook's), a later `logging.config.dictConfig` (Prefect's) closes it under its
    owner. Point the handler at the process's own stderr, which it never closes."""
    from absl import logging as absl_logging

    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """rouge-score logs through the `logging` module's functions, which give the root logger a
    stderr handler when it has none (`logging.basicConfig`): undo that, so scoring never
    changes how the rest of the process logs (nor keeps a handle on a stderr that may close)."""
    before = list(logging.root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in logging.root.handlers if h not in before]:
            logging.root.removeHandler(handler)


def _rouge_scores(hypotheses: Sequence[str], references: Sequence[str], bootstrap: int) -> dict:
    per_sentence = sentence_rouge(hypotheses, references)
    out: dict = {kind: round(float(values.mean()), 2) if len(values) else 0.0 for kind, values in per_sentence.items()}
    if bootstrap > 1 and len(hypotheses):
        samples = _resamples(len(hypotheses), bootstrap)
        for kind, values in per_sentence.items():
            means = values[samples].mean(axis=1)  # [bootstrap]
            out[f"{kind}_ci95"] = round(float(1.96 * means.std()), 2)
    out["output_words"] = round(_mean_words(hypotheses), 2)
    out["reference_words"] = round(_mean_words(references), 2)
    return out


def _mean_words(texts: Sequence[str]) -> float:
    return float(np.mean([len(text.split()) for text in texts])) if texts else 0.0


def _resamples(sentences: int, count: int) -> np.ndarray:
    """[count, sentences] sentence indices drawn with replacement, the same every run."""
    return np.random.default_rng(BOOTSTRAP_SEED).integers(0, sentences, size=(count, sentences))


def paired_bootstrap(baseline: Sequence[str], candidate: Sequence[str], references: Sequence[str],
                     metrics: Sequence[str], resamples: int = 1000) -> dict[str, dict]:
    """Is `candidate` better or worse than `baseline` on the same references?

    Returns {score name: {'baseline', 'candidate', 'delta', 'p_value'}} for every score of
    `metrics` ('bleu', 'chrf', or 'rouge1', 'rouge2', 'rougeL' for 'rouge'). `p_value` is the
    chance of a difference at least this large if both systems were equally good: both are
    scored on the same `resamples` resamples of the sentences (paired bootstrap, Koehn 2004).
    """
    _check_lengths(baseline, references)
    _check_lengths(candidate, references)
    samples = _resamples(len(references), resamples)  # [resamples, sentences]
    out: dict[str, dict] = {}
    for name in metrics:
        if name == "rouge":
            base_rouge, cand_rouge = sentence_rouge(baseline, references), sentence_rouge(candidate, references)
            for kind in ROUGE_TYPES:
                out[kind] = _paired_test(base_rouge[kind].mean(), cand_rouge[kind].mean(),
                                         base_rouge[kind][samples].mean(axis=1), cand_rouge[kind][samples].mean(axis=1))
        else:
            out[name] = _sacrebleu_paired_test(name, baseline, candidate, references, resamples)
    return out


def _sacrebleu_paired_test(name: str, baseline: Sequence[str], candidate: Sequence[str],
                           references: Sequence[str], resamples: int) -> dict:
    """sacrebleu's own paired bootstrap (`PairedTest`, its seed): the public path, which sums
    per-sentence statistics instead of rescoring every resample.

    One departure: equal scores get p = 1. sacrebleu counts only resampled differences strictly
    above the observed one, so a system against itself gets its smallest p-value (1/(n+1)), which
    a report would call significant although there is no difference at all."""
    test = PairedTest([("baseline", list(baseline)), ("candidate", list(candidate))],
                      {name: SACREBLEU_METRICS[name]()}, [list(references)], test_type="bs", n_samples=resamples)
    _, results = test()
    (base, cand), = (scores for key, scores in results.items() if key != "System")
    assert isinstance(base, Result) and isinstance(cand, Result) and cand.p_value is not None
    return _comparison(base.score, cand.score, 1.0 if cand.score == base.score else float(cand.p_value))


def _paired_test(baseline: float, candidate: float, baseline_resampled: np.ndarray,
                 candidate_resampled: np.ndarray) -> dict:
    observed = candidate - baseline
    deltas = candidate_resampled - baseline_resampled  # [resamples]
    # Centre the resampled differences on 0 (the null hypothesis) and count how often chance
    # alone gives a difference at least as large as the observed one.
    extreme = np.abs(deltas - deltas.mean()) >= abs(observed) - 1e-9
    return _comparison(baseline, candidate, (int(extreme.sum()) + 1) / (len(deltas) + 1))


def _comparison(baseline: float, candidate: float, p_value: float) -> dict:
    return {"baseline": round(float(baseline), 2), "candidate": round(float(candidate), 2),
            "delta": round(float(candidate - baseline), 2), "p_value": round(p_value, 4)}


def _check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
