"""s2s_core.data.cleaning: normalisation and the reject checks (with their precedence)."""

from __future__ import annotations

import dataclasses
import unicodedata

import pyarrow as pa
import pytest

from s2s_core.data.cleaning import normalize, reject_reasons
from s2s_core.data.config import CleanConfig

DEFAULT = CleanConfig()


def norm(texts: list[str | None], config: CleanConfig = DEFAULT) -> list[str]:
    return normalize(pa.array(texts, pa.string()), config).to_pylist()


def reasons(pairs: list[tuple[str, str]], config: CleanConfig = DEFAULT) -> list[str | None]:
    raw_s = pa.array([s for s, _ in pairs], pa.string())
    raw_t = pa.array([t for _, t in pairs], pa.string())
    out = reject_reasons(raw_s, raw_t, normalize(raw_s, config), normalize(raw_t, config), config)
    assert len(out) == len(pairs) and out.type == pa.string()
    return out.to_pylist()


def reason(source: str, target: str, **changes) -> str | None:
    return reasons([(source, target)], dataclasses.replace(DEFAULT, **changes))[0]


# ---------------------------------------------------------------- normalize


def test_nfc_composes_combining_marks():
    decomposed = "e\u0301 cafe\u0301 A\u030a"
    assert decomposed != "é café Å"
    assert norm([decomposed]) == ["\u00e9 caf\u00e9 \u00c5"]
    assert norm([decomposed]) == [unicodedata.normalize("NFC", decomposed)]


def test_nfc_can_be_disabled():
    assert norm(["cafe\u0301"], dataclasses.replace(DEFAULT, unicode_nfc=False)) == ["cafe\u0301"]


def test_nfc_is_not_nfkc():
    assert norm(["\ufb01 \u00bd"]) == ["\ufb01 \u00bd"]  # ligature and fraction survive NFC


@pytest.mark.parametrize("text, expected", [
    ("  a  b  ", "a b"),
    ("a\tb\t\tc", "a b c"),
    ("a\u00a0b", "a b"),                     # no-break space
    ("a\u3000\u2009b", "a b"),               # ideographic + thin space
    ("a\u2028b\u2029c", "a b c"),            # line/paragraph separators
    ("\u00a0\t lead and trail \u00a0\r\n", "lead and trail"),
    ("a\r\nb\nc", "a b c"),
    ("", ""),
    ("   ", ""),
    ("one", "one"),
])
def test_whitespace_collapsed_and_trimmed(text, expected):
    assert norm([text]) == [expected]


def test_whitespace_normalisation_can_be_disabled():
    assert norm(["  a\u00a0\tb "], dataclasses.replace(DEFAULT, normalize_whitespace=False)) == ["  a\u00a0\tb "]


def test_normalize_nulls_become_empty():
    assert norm([None, "x"]) == ["", "x"]


def test_normalize_is_idempotent():
    texts = ["  e\u0301\u00a0 x\t\ty ", "plain", "\u3000z\u3000"]
    once = norm(texts)
    assert norm(once) == once


# ---------------------------------------------------------------- each reject reason


def test_good_pairs_are_kept():
    assert reasons([("The cat sleeps.", "Il gatto dorme."), ("Hello", "Ciao"), ("a\tb", "c d")]) == [None, None, None]


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"])
@pytest.mark.parametrize("side", ["source", "target"])
def test_control_chars(bad, side):
    text = f"good{bad}text"
    pair = (text, "buono testo") if side == "source" else ("good text", text)
    assert reason(*pair) == "control_chars"


@pytest.mark.parametrize("ok", ["\t", "\n", "\r", "\u00a0", "\u00a1", "\u200b"])
def test_whitespace_and_printables_are_not_control_chars(ok):
    assert reason(f"good{ok}text", "buon testo") is None


def test_control_chars_are_seen_in_the_raw_text():
    # A trailing \x0b/\x1f could be hidden by trimming; the check looks at the raw text.
    assert reason("text\x1f", "testo") == "control_chars"
    assert reason("\x0btext", "testo") == "control_chars"


def test_control_chars_check_can_be_disabled():
    assert reason("a\x00b", "c\x7fd", drop_control_chars=False) is None


@pytest.mark.parametrize("source, target", [("", "x"), ("x", ""), ("   ", "x"), ("x", "\u00a0\t\u3000"), ("", "")])
def test_empty_after_normalisation(source, target):
    assert reason(source, target) == "empty"


def test_too_long_chars_with_a_one_megabyte_line():
    huge = "a" * 1_000_000
    assert reason(huge, "corto") == "too_long_chars"
    assert reason("short", huge) == "too_long_chars"


def test_too_long_chars_boundary_counts_characters_not_bytes():
    assert reason("é" * 10, "è" * 10, max_chars=10) is None   # 20 bytes, 10 characters
    assert reason("é" * 11, "è" * 10, max_chars=10) == "too_long_chars"
    assert reason("a" * 10, "b" * 11, max_chars=10) == "too_long_chars"


def test_too_long_chars_counts_after_normalisation():
    assert reason("  " + "a" * 10 + "  ", "b" * 10, max_chars=10) is None
    assert reason("e\u0301" * 10, "b" * 10, max_chars=10) is None  # 20 code points before NFC


def test_too_long_chars_can_be_disabled():
    assert reason("a" * 5000, "b" * 5000, max_chars=None, max_tokens=None) is None


def test_too_long_tokens():
    five = "w " * 5
    assert reason(five, "uno due", max_tokens=5) is None
    assert reason(five + "w", "uno due", max_tokens=5, max_length_ratio=None) == "too_long_tokens"
    assert reason("uno due", five + "w", max_tokens=5, max_length_ratio=None) == "too_long_tokens"
    assert reason(five + "w", "x", max_tokens=None, max_length_ratio=None) is None


def test_too_long_tokens_counts_whitespace_runs_once():
    text = "a \t b\u00a0\u00a0c   d"  # four tokens
    assert reason(text, "w x y z", max_tokens=4) is None
    assert reason(text, "w x y z", max_tokens=3) == "too_long_tokens"


def test_too_long_tokens_without_whitespace_normalisation():
    text = "  a \t b  c  "  # three tokens, irregular spacing kept
    config = dict(normalize_whitespace=False)
    assert reason(text, "x y z", max_tokens=3, **config) is None
    assert reason(text, "x y z", max_tokens=2, **config) == "too_long_tokens"


def test_length_ratio():
    assert reason("a" * 31, "b" * 10) == "length_ratio"      # 31 > 3.0 * 10
    assert reason("a" * 30, "b" * 10) is None                # exactly 3x is allowed
    assert reason("b" * 10, "a" * 31) == "length_ratio"      # either direction
    assert reason("a" * 31, "b" * 10, max_length_ratio=None) is None
    assert reason("a" * 31, "b" * 10, max_length_ratio=3.2) is None


def test_length_ratio_exempts_short_pairs():
    # The longer side has fewer than ratio_min_chars (20) characters: no ratio test.
    assert reason("a" * 19, "b") is None
    assert reason("a" * 20, "b") == "length_ratio"
    assert reason("a" * 20, "b", ratio_min_chars=21) is None
    assert reason("ab", "c", ratio_min_chars=0) is None      # 2 <= 3 * 1
    assert reason("abcd", "c", ratio_min_chars=0) == "length_ratio"


def test_identical():
    assert reason("Same text", "Same text") == "identical"
    assert reason("Same  text ", "Same text") == "identical"        # equal after normalisation
    assert reason("cafe\u0301", "caf\u00e9") == "identical"
    assert reason("Same text", "same text") is None                 # case matters
    assert reason("Same text", "Same text", drop_identical=False) is None


# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize("source, target, expected", [
    ("\x00", "", "control_chars"),                          # control beats empty
    ("a" * 2000 + "\x01", "b", "control_chars"),            # control beats too long
    ("", "", "empty"),                                      # empty beats identical
    ("a" * 1001, "b", "too_long_chars"),                    # chars beat ratio
    ("w " * 300, "w " * 300, "too_long_tokens"),            # tokens beat identical (600 chars < 1000)
    ("w " * 300, "x", "too_long_tokens"),                   # tokens beat ratio
    ("x" * 400, "x" * 400, "identical"),
    ("Same " * 10, "Same " * 10, "identical"),
    ("a" * 100, "a" * 10, "length_ratio"),
    ("\x00", "\x00", "control_chars"),                      # control beats identical
])
def test_earliest_check_wins(source, target, expected):
    assert reason(source, target) == expected


def test_disabling_a_check_reveals_the_next_one():
    pair = ("\x00" + "a" * 2000, "a" * 2000 + "\x00")
    # fails control chars and too long chars; one token per side, 1:1 ratio, not identical
    assert reason(*pair) == "control_chars"
    assert reason(*pair, drop_control_chars=False) == "too_long_chars"
    assert reason(*pair, drop_control_chars=False, max_chars=None) is None
    same = ("x " * 300, "x " * 300)
    assert reason(*same) == "too_long_tokens"
    assert reason(*same, max_tokens=None) == "identical"
    assert reason(*same, max_tokens=None, drop_identical=False) is None


def test_reasons_are_per_row_in_a_batch():
    pairs = [("ok", "bene"), ("", "x"), ("same", "same"), ("\x07", "x"), ("a" * 1001, "b"), ("fine", "bene")]
    assert reasons(pairs) == [None, "empty", "identical", "control_chars", "too_long_chars", None]


def test_no_checks_at_all():
    config = CleanConfig(drop_control_chars=False, max_chars=None, max_tokens=None, max_length_ratio=None,
                         drop_identical=False)
    assert reasons([("\x00", "\x00"), ("a" * 5000, "b"), ("", "x")], config) == [None, None, "empty"]
