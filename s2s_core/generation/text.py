"""The text layer: strings in, strings out. The only part of decoding that knows the tokenizer.

Inputs are tokenized, sorted by length and packed into batches of at most `max_tokens` padded
source tokens (few pads, few batches), generated, detokenized and returned in input order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterator, Literal, Sequence

from s2s_core.errors import ConfigError
from s2s_core.generation.config import GenerationConfig
from s2s_core.generation.engines import build_engine
from s2s_core.generation.generator import Hypothesis, TargetStart
from s2s_core.generation.languages import Languages, Template, code_problem
from s2s_core.package import ModelPackage

LSTM_SOURCE_LIMIT = 1024
"""Longest source for models without a position table (LSTM): memory grows with it, not correctness."""

MAX_PIECE_CHARS = 16
"""SentencePiece's default `max_sentencepiece_length`: no piece covers more characters (bar
collapsed whitespace), so N tokens never need more than N * 16 characters of text."""

_SENTENCE_END = re.compile(r"(?<=[.!?…;:。！？])\s+")


@dataclass(frozen=True)
class TextResult:
    """The output for one input string."""

    text: str
    """Best output ('' for an empty input)."""
    score: float
    """Its length-normalised log-probability (mean over pieces for a split input; 0 if empty)."""
    tokens: int
    """Generated tokens (without EOS)."""
    split: bool = False
    """The input was longer than the model's limit and was generated sentence by sentence."""
    truncated: bool = False
    """The input was longer than the model's limit and was cut to it."""
    empty: bool = False
    """The input was empty or whitespace only."""
    nbest: tuple[tuple[str, float], ...] = ()
    """With `nbest` > 1: every returned (text, score), best first."""
    target_lang: str | None = None
    """The language code generated into (multilingual models; None for the others)."""


@dataclass(frozen=True)
class _Piece:
    """A tokenized piece of one input: the whole input, or one of its sentences."""

    index: int
    ids: list[int]
    target: TargetStart
    """How its target starts (the target language): pieces are generated in groups of one start."""


class TextGenerator:
    """Generates text for strings with a model package; `long_inputs` says what happens to
    inputs longer than the model's limit. `config.engine` picks what runs the model
    (`s2s_core.generation.engines`); `threads`: CPU threads the engine may use.

    A multilingual model decodes from `config.source_lang` into `config.target_lang` (None: the
    package's defaults), or into a target language per input (`__call__`'s `target_langs`).

    Raises (when built):
        ConfigError: a language option the model cannot take (before the engine is built).
    """

    long_inputs: Literal["split", "truncate"] = "truncate"

    def __init__(self, package: ModelPackage, config: GenerationConfig, threads: int | None = None) -> None:
        self.package, self.config = package, config
        self.languages = Languages(package.source_tokenizer, package.target_tokenizer)
        self.template = self.languages.template(config.source_lang, config.target_lang)
        self.target_lang = self.template.target_lang
        """The target language code of inputs without one of their own (None: not multilingual)."""
        model_limit = getattr(package.config, "max_positions", LSTM_SOURCE_LIMIT)
        self.source_limit = min(config.max_source_tokens or model_limit, model_limit)
        # A target needs BOS plus its tokens inside the position table too.
        self.engine = build_engine(package, replace(config, max_length=min(config.max_length, model_limit - 1)),
                                   threads)

    def __call__(self, texts: list[str], target_langs: Sequence[str | None] | None = None) -> list[TextResult]:
        """One result per input string, in input order; `target_langs`: a target language code per
        input (None entries, or None: `config.target_lang`, else the package's default).

        Raises:
            ConfigError: a target language the model does not have (`target_problem` says so first).
        """
        templates = self._templates(len(texts), target_langs)
        pieces, flags = self._pieces(texts, templates)
        hypotheses = self._generate(pieces)
        by_input: dict[int, list[list[Hypothesis]]] = {}
        for piece, hyps in zip(pieces, hypotheses):
            by_input.setdefault(piece.index, []).append(hyps)
        return [self._result(by_input.get(i, []), flags[i], templates[i].target_lang) for i in range(len(texts))]

    def target_problem(self, code: str) -> str | None:
        """Why inputs cannot be generated into the target language `code`, or None."""
        if self.languages.section is None:
            return f"target language {code!r}: this model has no language codes"
        problem = code_problem(self.languages.section, code)
        return f"target language {code!r}: {problem}" if problem else None

    def _templates(self, count: int, target_langs: Sequence[str | None] | None) -> list[Template]:
        if target_langs is None:
            return [self.template] * count
        if len(target_langs) != count:
            raise ConfigError([f"`target_langs` must have one code per input ({count}), but has {len(target_langs)}"])
        return [self.template if code is None else self.languages.template(self.config.source_lang, code)
                for code in target_langs]

    def _pieces(self, texts: list[str], templates: list[Template]) -> tuple[list[_Piece], list[dict[str, bool]]]:
        """Tokenized pieces (as model rows: the template's prefix and suffix, e.g. a language code
        and EOS, around the text's ids) and each input's flags."""
        tokenizer = self.package.source_tokenizer
        pieces, flags = [], []
        # Truncation never needs more than the limit's worth of characters: cutting first keeps a
        # 1 MB document from becoming a 250k-id list (memory of bulk jobs stays per unit, small).
        cut = self.source_limit * MAX_PIECE_CHARS if self.long_inputs == "truncate" else None
        for index, (text, ids) in enumerate(zip(texts, tokenizer.encode_batch([t[:cut] for t in texts]))):
            template = templates[index]
            room = self.source_limit - len(template.source_prefix) - len(template.source_suffix)  # text ids per row
            if cut is not None and len(text) > cut and len(ids) <= room:
                ids = tokenizer.encode(text)  # rare: whitespace runs collapsed, the cut may have lost text that fits
            if not text.strip():
                flags.append({"empty": True})
            elif len(ids) <= room:
                pieces.append(_Piece(index, template.row(ids), template.target))
                flags.append({})
            elif self.long_inputs == "truncate":
                pieces.append(_Piece(index, template.row(ids[:room]), template.target))
                flags.append({"truncated": True})
            else:
                pieces += [_Piece(index, template.row(chunk), template.target) for chunk in self._split(text, room)]
                flags.append({"split": True})
        return pieces, flags

    def _split(self, text: str, room: int) -> Iterator[list[int]]:
        """Token ids of `text` by sentence; a sentence longer than `room` ids is cut into chunks that fit."""
        tokenizer = self.package.source_tokenizer
        for sentence in _SENTENCE_END.split(text.strip()):
            ids = tokenizer.encode(sentence)
            for start in range(0, len(ids), room):
                yield ids[start:start + room]

    def _generate(self, pieces: list[_Piece]) -> list[list[Hypothesis]]:
        """Hypotheses per piece, generated in length-sorted batches of at most `max_tokens` padded
        tokens; pieces whose targets start differently (target languages) never share a batch.
        Outputs do not depend on the batch a piece is in, so grouping changes none of them."""
        groups: dict[TargetStart, list[int]] = {}
        for i, piece in enumerate(pieces):
            groups.setdefault(piece.target, []).append(i)
        out: list[list[Hypothesis]] = [[] for _ in pieces]
        for target, group in groups.items():
            order = sorted(group, key=lambda i: len(pieces[i].ids))
            for batch in token_budget_batches([len(pieces[i].ids) for i in order], self.config.max_tokens):
                members = [order[i] for i in batch]
                for i, hyps in zip(members, self.engine.generate([pieces[i].ids for i in members], target)):
                    out[i] = hyps
        return out

    def _result(self, parts: list[list[Hypothesis]], flags: dict[str, bool], target_lang: str | None) -> TextResult:
        """Join the best hypothesis of each piece of one input."""
        if not parts:
            return TextResult(text="", score=0.0, tokens=0, split=flags.get("split", False),
                              truncated=flags.get("truncated", False), empty=flags.get("empty", False),
                              target_lang=target_lang)
        decode = self.package.target_tokenizer.decode
        text = " ".join(decode(hyps[0].tokens) for hyps in parts)
        score = sum(hyps[0].score for hyps in parts) / len(parts)
        nbest = tuple((decode(h.tokens), h.score) for h in parts[0]) if len(parts) == 1 and self.config.nbest > 1 else ()
        return TextResult(text=text, score=score, tokens=sum(len(h[0].tokens) for h in parts), nbest=nbest,
                          target_lang=target_lang, **flags)


class Translator(TextGenerator):
    """Translation: an input longer than the model's limit is translated sentence by sentence."""

    long_inputs = "split"


class Summarizer(TextGenerator):
    """Summarization: an input longer than the model's limit is truncated to it."""

    long_inputs = "truncate"


def token_budget_batches(lengths: list[int], max_tokens: int) -> Iterator[list[int]]:
    """Consecutive positions of the (sorted) `lengths` grouped so that rows x longest <= max_tokens
    (a row longer than the budget gets a batch of its own)."""
    batch: list[int] = []
    longest = 0
    for position, length in enumerate(lengths):
        if batch and (len(batch) + 1) * max(longest, length) > max_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(position)
        longest = max(longest, length)
    if batch:
        yield batch
