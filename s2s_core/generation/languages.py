"""Languages of multilingual imported models, chosen when decoding (`source_lang`, `target_lang`).

An imported NLLB, M2M-100, mBART or multilingual Marian package records its language codes in
its tokenizer's settings.json (`languages`: written by `s2s_core.importers.vocab`): where the
codes go (`layout`), every code the vocabulary has and its token, and the defaults given to
`s2s import`. For a (source, target) pair this module gives the ids around a source row and how
its target starts, as Hugging Face's tokenizer (`src_lang`) and `generate` (`forced_bos_token_id`,
`decoder_start_token_id`) build them:

| layout | families | source row | target |
|---|---|---|---|
| prefix | NLLB, M2M-100, mBART-50 | `[src] text </s>` | starts from `</s>`, target code forced first |
| suffix | NLLB with legacy_behaviour | `text </s> [src]` | target code forced first |
| start | mBART-25 | `text </s> [src]` | the decoder starts from the target code |
| marian | multilingual OPUS-MT | `>>tgt<< text </s>` | no source code |

Codes are checked before any model work: an unknown one is one line naming the closest valid
codes; a model without languages given one is one line too.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.generation.generator import TargetStart
from s2s_core.tokenizer import EOS_ID, Tokenizer

LAYOUTS = ("prefix", "suffix", "start", "marian")
CLOSEST = 3
"""Codes named when one is unknown."""


@dataclass(frozen=True)
class Template:
    """The ids around one source row, and how its target starts, for one language pair."""

    source_prefix: tuple[int, ...]
    source_suffix: tuple[int, ...]
    target: TargetStart
    target_lang: str | None
    """The target language code (None: the model has none, or none was chosen)."""

    def row(self, ids: list[int]) -> list[int]:
        """A source model row of encoded text."""
        return [*self.source_prefix, *ids, *self.source_suffix]


def language_problems(section: dict[str, Any] | None, origin: str | None, source: str | None,
                      target: str | None) -> list[str]:
    """Why the codes `source`/`target` (None: the package's defaults) cannot be decoded with a
    package whose tokenizer settings.json has `languages` = `section` (None: no languages) and
    `origin` (the family it was imported from; None: trained here). One line at most per code."""
    given = [name for name, code in (("source_lang", source), ("target_lang", target)) if code is not None]
    if section is None:
        return [f"`{'`/`'.join(given)}`: {no_languages(origin)}"] if given else []
    out = []
    if section["layout"] == "marian":
        if source is not None:
            out.append("`source_lang`: a Marian model takes no source language (only `target_lang`, its >>xx<< token)")
    else:
        out += _option_problem(section, "source_lang", source, "source")
    out += _option_problem(section, "target_lang", target, "target")
    return out


def no_languages(origin: str | None) -> str:
    """Why a model imported from `origin` (None: trained here) takes no language options."""
    if origin in ("m2m_100", "mbart"):  # a multilingual family imported before packages recorded their codes
        return f"this {origin} package records no language codes: import it again with `s2s import` to choose them"
    what = f"this {origin} model" if origin else "this model (trained here)"
    return (f"{what} has no language codes to choose from (languages are for multilingual imported models: "
            f"NLLB, M2M-100, mBART, multilingual Marian)")


def _option_problem(section: dict[str, Any], name: str, code: str | None, side: str) -> list[str]:
    if code is None:
        if section.get(side) is None and section["layout"] != "marian":
            return [f"`{name}` is required: this model records no default {side} language ("
                    f"{_examples(section)})"]
        return []
    problem = code_problem(section, code)
    return [f"`{name}`: {problem}"] if problem else []


def code_problem(section: dict[str, Any] | None, code: str) -> str | None:
    """Why `code` is not one of the model's language codes (naming the closest), or None."""
    if section is None:
        return "this model has no language codes"
    if _token(section, code) is not None:
        return None
    near = closest_codes(code, list(section["codes"]))
    hint = f"closest: {', '.join(near)}; {len(section['codes'])} codes in all" if near else _examples(section)
    return f"unknown language code {code!r} for this model ({hint})"


def closest_codes(code: str, codes: list[str]) -> list[str]:
    """Up to CLOSEST of `codes` nearest to `code`: the one that differs only in case, else similar
    spellings (difflib, ignoring case), then codes that start with it (`it` -> `ita_Latn`) or that
    it starts with."""
    lowered = {c.lower(): c for c in sorted(codes)}
    key = code.strip().lower()
    if key in lowered:  # only the case differs: that one
        return [lowered[key]]
    close = [lowered[c] for c in difflib.get_close_matches(key, list(lowered), n=CLOSEST, cutoff=0.5)]
    starting = [c for low, c in lowered.items() if low.startswith(key) or key.startswith(low)] if key else []
    return list(dict.fromkeys(close + starting))[:CLOSEST]


def _examples(section: dict[str, Any]) -> str:
    codes = sorted(section["codes"])
    return f"{len(codes)} codes, e.g. {', '.join(codes[:CLOSEST])}"


def _token(section: dict[str, Any], code: str) -> str | None:
    """The token of `code`; a code given as its token (`__it__`, `>>ita<<`) is accepted too."""
    codes = section["codes"]
    if code in codes:
        return codes[code]
    return code if code in codes.values() else None


class Languages:
    """The language templates of one package's tokenizers (cached per pair of codes)."""

    def __init__(self, source: Tokenizer, target: Tokenizer) -> None:
        self.source_tokenizer, self.target_tokenizer = source, target
        self.section = source.languages
        self.origin = source.origin
        if self.section is not None and self.section.get("layout") not in LAYOUTS:
            raise CheckpointError(str(source.path), f"unknown language layout {self.section.get('layout')!r} in "
                                                    f"settings.json (known: {', '.join(LAYOUTS)})")
        self._templates: dict[tuple[str | None, str | None], Template] = {}

    @property
    def codes(self) -> list[str]:
        """Every language code of the model (empty: not multilingual)."""
        return sorted(self.section["codes"]) if self.section else []

    def check(self, source: str | None, target: str | None) -> None:
        """Raises ConfigError (one line per option) unless both codes can be decoded."""
        problems = language_problems(self.section, self.origin, source, target)
        if problems:
            raise ConfigError(problems)

    def template(self, source: str | None, target: str | None) -> Template:
        """The template for `source`/`target` (None: the package's default).

        Raises:
            ConfigError: an unknown code, a code the model cannot take, or a missing default.
        """
        key = (source, target)
        if key not in self._templates:
            self.check(source, target)
            self._templates[key] = self._build(source, target)
        return self._templates[key]

    def _build(self, source: str | None, target: str | None) -> Template:
        section = self.section
        if section is None:  # as the tokenizer settings say (BART's forced <s>, nothing for ours)
            return Template(self.source_tokenizer.prefix, self.source_tokenizer.suffix,
                            TargetStart(forced=tuple(self.target_tokenizer.prefix)), None)
        target = target or section.get("target")
        source_id = self._id(self.source_tokenizer, section, source or section.get("source"))
        target_id = self._id(self.target_tokenizer, section, target)
        target_code = _code_of(section, target)
        layout = section["layout"]
        if layout == "marian":
            source_ids = () if target is None else (self._id(self.source_tokenizer, section, target),)
            return Template(source_ids, (EOS_ID,), TargetStart(), target_code)
        if layout == "prefix":
            return Template((source_id,), (EOS_ID,), TargetStart(forced=(target_id,)), target_code)
        if layout == "suffix":
            return Template((), (EOS_ID, source_id), TargetStart(forced=(target_id,)), target_code)
        return Template((), (EOS_ID, source_id), TargetStart(start=target_id), target_code)

    @staticmethod
    def _id(tokenizer: Tokenizer, section: dict[str, Any], code: str | None) -> int:
        token = _token(section, code) if code is not None else None
        if token is None:
            return -1  # not needed by this layout (a Marian source)
        return tokenizer.token_to_id(token)  # type: ignore[attr-defined]  # an imported tokenizer's


def _code_of(section: dict[str, Any], code: str | None) -> str | None:
    """The code as the model lists it (`__it__` given -> `it`)."""
    if code is None or code in section["codes"]:
        return code
    return next((known for known, token in section["codes"].items() if token == code), code)

