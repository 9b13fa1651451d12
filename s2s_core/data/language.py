"""Language identification of pairs: is each side in the language the corpus says it is?

Uses py3langid (a maintained fork of langid.py: 97 languages, a naive Bayes model over byte
n-grams that ships inside its wheel as plain numpy arrays, loaded without pickle; nothing is
downloaded). Short strings are not judged (a UI label of three words says little about its
language), and a pair is rejected only when the detector is confident that a side is in
another language, so uncertain cases are kept.

Speed: py3langid walks its n-gram automaton one byte at a time in Python (about 80 us for a
sentence of 100 bytes). `detect_many` runs the same model on a whole list at once: each distinct
string judged once, the automaton stepped for many strings together (numpy, strings of similar
length side by side), the naive Bayes sums and the softmax vectorised. It gives py3langid's
language and, to float32 rounding, its probability (checked against py3langid when first used;
it falls back to py3langid string by string if the model's layout is not the one it knows).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np


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


GROUP_STRINGS = 2048
"""Strings stepped through the automaton together (memory: this times the longest one's bytes)."""
SCORE_ROWS = 16
"""Strings whose naive Bayes sums are formed together: their n-grams x languages x 4 bytes (about
0.6 MB for 16 sentences) stay in the CPU's cache."""
_SELF_CHECK = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Questo è un testo scritto in italiano, senza alcun dubbio.",
    "Öffnen Sie die Datei im Editorfenster und speichern Sie sie.",
    "LE FICHIER N'A PAS PU ÊTRE OUVERT",
    "Открыть файл в новом окне",
    "",
    "12345 67890",
)


class _Batched:
    """py3langid's `classify` (norm_probs=True) for a list of strings; see the module docstring."""

    def __init__(self, identifier: Any) -> None:
        self.encode = identifier._encode  # py3langid's own: lower-case an all-caps text, NFC, UTF-8
        self.nextmove = np.frombuffer(identifier.tk_nextmove, np.dtype(identifier.tk_nextmove.typecode))
        self.rowbase = np.asarray(identifier._rowbase, np.int64)
        self.output = np.asarray(identifier.tk_output, np.int64)
        self.ptc, self.pc = identifier.nb_ptc, np.asarray(identifier.nb_pc, np.float32)
        self.classes, self.aliases = list(identifier.nb_classes), list(identifier._alias_pairs)
        if not identifier._norm_probs or identifier.min_confidence is not None:
            raise ValueError("expects probabilities (norm_probs=True) and no min_confidence")

    def __call__(self, texts: list[str]) -> list[tuple[str, float]]:
        unique = list(dict.fromkeys(texts))
        encoded = [self.encode(text) for text in unique]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)  # similar lengths together
        found: list[tuple[str, float]] = [("", 0.0)] * len(encoded)
        for start in range(0, len(order), GROUP_STRINGS):
            group = order[start:start + GROUP_STRINGS]
            for i, result in zip(group, self._group([encoded[i] for i in group])):
                found[i] = result
        by_text = dict(zip(unique, found))
        return [by_text[text] for text in texts]

    def _group(self, data: list[bytes]) -> list[tuple[str, float]]:
        """Strings sorted longest first -> (language, probability) each."""
        lengths = np.array([len(d) for d in data], np.int64)
        width, n = int(lengths[0]), len(data)
        codes = np.frombuffer(b"".join(d.ljust(width, b"\0") for d in data), np.uint8).reshape(n, width).T.copy()
        active = np.searchsorted(-lengths, -np.arange(width), side="left")  # active[p]: strings longer than p
        state, rows, features = np.zeros(n, np.int64), [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for p in range(width):  # one byte of every string at once; the strings still going come first
            k = int(active[p])
            state[:k] = self.nextmove[self.rowbase[state[:k]] + codes[p, :k]]
            emitted = self.output[state[:k]]
            hit = np.flatnonzero(emitted >= 0)
            rows.append(hit)
            features.append(emitted[hit])
        n_features = self.ptc.shape[0]
        keys, counts = np.unique(np.concatenate(rows) * n_features + np.concatenate(features), return_counts=True)
        hit_rows, weights = keys // n_features, np.log1p(counts.astype(np.float32))
        # The model's rows of the n-grams these strings have, in float32 (the model is float16): a
        # few thousand rows, each converted once instead of once per string that has it.
        present, local = np.unique(keys % n_features, return_inverse=True)
        table = self.ptc[present].astype(np.float32)
        scores = np.zeros((n, len(self.classes)), np.float32)  # no n-gram at all: uniform, as py3langid
        bounds = np.searchsorted(hit_rows, np.arange(0, n + SCORE_ROWS, SCORE_ROWS))
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):  # naive Bayes: sum of log1p(count) x row
            if a == b:
                continue
            part = table[local[a:b]]  # (n-grams, languages)
            part *= weights[a:b, None]
            starts = np.flatnonzero(np.diff(hit_rows[a:b], prepend=-1))
            scores[hit_rows[a:b][starts]] = np.add.reduceat(part, starts, axis=0) + self.pc
        scores *= (1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32)[:, None]  # py3langid's temperature
        np.exp(scores - scores.max(axis=1, keepdims=True), out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self.aliases:  # a language listed twice (two scripts): one score
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        return [(self.classes[c], float(scores[r, c])) for r, c in enumerate(best.tolist())]


@lru_cache(maxsize=1)
def _batched() -> Any:
    """The batched detector, or py3langid one string at a time when this model is not laid out
    as `_Batched` expects (checked on a few strings against py3langid itself)."""
    identifier = _identifier()
    try:
        batched = _Batched(identifier)
        agree = all(lang == want and math.isclose(p, q, abs_tol=1e-4) for (lang, p), (want, q)
                    in zip(batched(list(_SELF_CHECK)), map(identifier.classify, _SELF_CHECK)))
    except (AttributeError, TypeError, ValueError, IndexError):
        agree = False
    if agree:
        return batched
    warnings.warn("py3langid's model is not laid out as expected: language id runs string by string (slower)",
                  stacklevel=2)
    return lambda texts: [detect(text) for text in texts]


def detect_many(texts: list[str]) -> list[tuple[str, float]]:
    """`detect` of every text, in order; much faster on long lists (see the module docstring)."""
    return list(_batched()(texts)) if texts else []


def wrong_language(source: str, target: str, check: LanguageCheck) -> str | None:
    """Why the pair is not in the configured languages ('source: de 0.98 (expected en)'), or
    None when both sides are (or are too short or too uncertain to judge)."""
    return _judge(source, target, check, detect)


def _judge(source: str, target: str, check: LanguageCheck, verdict: Any) -> str | None:
    problems = []
    for side, text, expected in (("source", source, check.source), ("target", target, check.target)):
        if len(text) < check.min_chars:
            continue
        language, probability = verdict(text)
        if language != expected and probability >= check.min_confidence:
            problems.append(f"{side}: {language} {probability:.2f} (expected {expected})")
    return "; ".join(problems) or None


def language_rejects(sources: list[str], targets: list[str], config: Any) -> dict[int, str]:
    """{row index: detail} of the pairs in the wrong language, per `config` (a LanguageIdConfig);
    the same judgments as `wrong_language` pair by pair, with every long-enough side of the list
    detected at once."""
    check = LanguageCheck(config.source, config.target, config.min_chars, config.min_confidence)
    judged = [text for text in (*sources, *targets) if len(text) >= check.min_chars]
    verdicts = dict(zip(judged, detect_many(judged)))
    found = {}
    for i, (source, target) in enumerate(zip(sources, targets)):
        detail = _judge(source, target, check, verdicts.__getitem__)
        if detail is not None:
            found[i] = detail
    return found
