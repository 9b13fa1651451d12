"""Language identification of pairs: is each side in the language the corpus says it is?

Uses py3langid (a maintained fork of langid.py: 97 languages, a naive Bayes model over byte
n-grams that ships inside its wheel as plain numpy arrays, loaded without pickle; nothing is
downloaded). Short strings are not judged (a UI label of three words says little about its
language), and a pair is rejected only when the detector is confident that a side is in
another language, so uncertain cases are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class LanguageCheck:
    """What to check: the expected languages (ISO 639-1, e.g. 'en', 'it') and when to judge."""

    source: str
    target: str
    min_chars: int
    """Sides shorter than this (characters) are not judged."""
    min_confidence: float
    """A side is in the wrong language when another language has at least this probability."""


@lru_cache(maxsize=1)
def _identifier() -> Any:
    """The detector, loaded once per process (about a second)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as err:  # an optional feature: say which package provides it
        raise ImportError("clean.language_id needs the py3langid package (pip install py3langid)") from err
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def known_languages() -> list[str]:
    """The codes the detector knows (what `source` and `target` may be)."""
    return list(_identifier().nb_classes)


def detect(text: str) -> tuple[str, float]:
    """(language code, probability) of the most likely language of `text`."""
    language, probability = _identifier().classify(text)
    return str(language), float(probability)


def wrong_language(source: str, target: str, check: LanguageCheck) -> str | None:
    """Why the pair is not in the configured languages ('source: de 0.98 (expected en)'), or
    None when both sides are (or are too short or too uncertain to judge)."""
    problems = []
    for side, text, expected in (("source", source, check.source), ("target", target, check.target)):
        if len(text) < check.min_chars:
            continue
        language, probability = detect(text)
        if language != expected and probability >= check.min_confidence:
            problems.append(f"{side}: {language} {probability:.2f} (expected {expected})")
    return "; ".join(problems) or None


def language_rejects(sources: list[str], targets: list[str], config: Any) -> dict[int, str]:
    """{row index: detail} of the pairs in the wrong language, per `config` (a LanguageIdConfig)."""
    check = LanguageCheck(config.source, config.target, config.min_chars, config.min_confidence)
    found = {}
    for i, (source, target) in enumerate(zip(sources, targets)):
        detail = wrong_language(source, target, check)
        if detail is not None:
            found[i] = detail
    return found
