"""Corpus scores with sacrebleu, always with its signature so numbers are comparable to
published ones (detokenized text in, sacrebleu's own tokenization)."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF


def translation_scores(hypotheses: list[str], references: list[str], bootstrap: int = 0) -> dict:
    """{'bleu', 'chrf', 'signature': {...}, 'sentences'} and, with `bootstrap` > 1 resamples,
    'bleu_ci95' and 'chrf_ci95': the half-width of sacrebleu's 95% bootstrap interval."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    resamples = bootstrap if bootstrap > 1 else 1
    out: dict = {"sentences": len(hypotheses), "signature": {}}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        score = metric.corpus_score(hypotheses, [references], n_bootstrap=resamples)
        out[name] = round(score.score, 2)
        out["signature"][name] = str(metric.get_signature())
        if resamples > 1:
            out[f"{name}_ci95"] = round(float(score._ci), 2)  # sacrebleu's own mean ± 95% CI
    return out
