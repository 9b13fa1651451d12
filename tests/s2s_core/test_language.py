"""Language identification on real sentences: right languages pass, wrong ones are named, short
or uncertain ones are not judged."""

from __future__ import annotations

from s2s_core.data.language import LanguageCheck, detect, known_languages, wrong_language
from tests.conftest import SAMPLE

CHECK = LanguageCheck(source="en", target="it", min_chars=20, min_confidence=0.9)


def real_pairs(limit: int) -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in (SAMPLE / "test.tsv").read_text(encoding="utf-8").split("\n") if line]
    return [(row[0], row[1]) for row in rows[:limit]]


def test_real_en_it_pairs_are_mostly_accepted():
    pairs = [(s, t) for s, t in real_pairs(300) if len(s) >= 40 and len(t) >= 40]
    rejected = [p for p in pairs if wrong_language(*p, CHECK)]
    assert len(pairs) > 100 and len(rejected) <= 0.03 * len(pairs)


def test_swapped_sides_are_named_with_the_detected_language():
    source, target = next((s, t) for s, t in real_pairs(300) if len(s) >= 60 and len(t) >= 60)
    detail = wrong_language(target, source, CHECK)
    assert detail is not None and "source: it" in detail and "(expected en)" in detail
    assert "target: en" in detail and "(expected it)" in detail


def test_short_or_uncertain_sides_are_not_judged():
    german = "Öffnen Sie die Datei im Editorfenster"
    assert wrong_language("Open the file", german, LanguageCheck("en", "it", 60, 0.9)) is None  # too short
    assert wrong_language("Open the file", german, LanguageCheck("en", "it", 20, 0.99)) is None  # not sure enough
    assert wrong_language("Open the file", german, LanguageCheck("en", "it", 20, 0.9)) == "target: de 0.96 (expected it)"


def test_the_detector_knows_the_usual_codes():
    assert {"en", "it", "de", "fr", "es"} <= set(known_languages())
    language, probability = detect("Questo è un testo scritto in italiano, senza alcun dubbio.")
    assert language == "it" and 0.5 < probability <= 1.0


def test_detect_many_gives_what_detect_gives_string_by_string():
    from s2s_core.data import language

    texts = [s for pair in real_pairs(400) for s in pair] + ["", "x", "12345", "OPEN THE FILE NOW PLEASE", "Ünïcödé àèìòù"]
    texts += texts[:50]  # repeats are judged once, answered at every place
    assert isinstance(language._batched(), language._Batched)  # the installed py3langid takes the fast path
    many = language.detect_many(texts)
    assert len(many) == len(texts)
    for text, (lang, probability) in zip(texts, many):
        want_lang, want_probability = detect(text)
        assert lang == want_lang and abs(probability - want_probability) < 1e-4, text
    assert language.detect_many([]) == []
    assert language.detect_many(["", "1234"]) == [detect(""), detect("1234")]  # no n-gram at all: uniform


def test_language_rejects_judge_as_wrong_language_does_pair_by_pair():
    from types import SimpleNamespace

    from s2s_core.data.language import language_rejects

    pairs = real_pairs(300)
    pairs[3], pairs[7] = pairs[3][::-1], ("Open the file", "Öffnen Sie die Datei im Editorfenster")
    config = SimpleNamespace(source="en", target="it", min_chars=20, min_confidence=0.9)
    found = language_rejects([s for s, _ in pairs], [t for _, t in pairs], config)
    expected = {i: d for i, (s, t) in enumerate(pairs) if (d := wrong_language(s, t, CHECK)) is not None}
    assert found == expected and {3, 7} <= set(found)
