"""The text layer: strings in, strings out. The only part of decoding that knows the tokenizer.

Inputs are tokenized, sorted by length and packed into batches of at most `max_tokens` padded
source tokens (few pads, few batches), generated, detokenized and returned in input order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterator, Literal

from s2s_core.generation.config import GenerationConfig
from s2s_core.generation.engines import build_engine
from s2s_core.generation.generator import Hypothesis
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


@dataclass(frozen=True)
class _Piece:
    """A tokenized piece of one input: the whole input, or one of its sentences."""

    index: int
    ids: list[int]


class TextGenerator:
    """Generates text for strings with a model package; `long_inputs` says what happens to
    inputs longer than the model's limit. `config.engine` picks what runs the model
    (`s2s_core.generation.engines`); `threads`: CPU threads the engine may use."""

    long_inputs: Literal["split", "truncate"] = "truncate"

    def __init__(self, package: ModelPackage, config: GenerationConfig, threads: int | None = None) -> None:
        self.package, self.config = package, config
        model_limit = getattr(package.config, "max_positions", LSTM_SOURCE_LIMIT)
        self.source_limit = min(config.max_source_tokens or model_limit, model_limit)
        # A target needs BOS plus its tokens inside the position table too.
        self.engine = build_engine(package, replace(config, max_length=min(config.max_length, model_limit - 1)),
                                   threads)

    def __call__(self, texts: list[str]) -> list[TextResult]:
        """One result per input string, in input order."""
        pieces, flags = self._pieces(texts)
        hypotheses = self._generate(pieces)
        by_input: dict[int, list[list[Hypothesis]]] = {}
        for piece, hyps in zip(pieces, hypotheses):
            by_input.setdefault(piece.index, []).append(hyps)
        return [self._result(by_input.get(i, []), flags[i]) for i in range(len(texts))]

    def _pieces(self, texts: list[str]) -> tuple[list[_Piece], list[dict[str, bool]]]:
        """Tokenized pieces (as model rows: the tokenizer's prefix and suffix, e.g. EOS, around the
        text's ids) and each input's flags."""
        tokenizer = self.package.source_tokenizer
        room = self.source_limit - len(tokenizer.prefix) - len(tokenizer.suffix)  # ids of text per row
        pieces, flags = [], []
        # Truncation never needs more than the limit's worth of characters: cutting first keeps a
        # 1 MB document from becoming a 250k-id list (memory of bulk jobs stays per unit, small).
        cut = self.source_limit * MAX_PIECE_CHARS if self.long_inputs == "truncate" else None
        for index, (text, ids) in enumerate(zip(texts, tokenizer.encode_batch([t[:cut] for t in texts]))):
            if cut is not None and len(text) > cut and len(ids) <= room:
                ids = tokenizer.encode(text)  # rare: whitespace runs collapsed, the cut may have lost text that fits
            if not text.strip():
                flags.append({"empty": True})
            elif len(ids) <= room:
                pieces.append(_Piece(index, tokenizer.row(ids)))
                flags.append({})
            elif self.long_inputs == "truncate":
                pieces.append(_Piece(index, tokenizer.row(ids[:room])))
                flags.append({"truncated": True})
            else:
                pieces += [_Piece(index, tokenizer.row(chunk)) for chunk in self._split(text, room)]
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
        """Hypotheses per piece, generated in length-sorted batches of at most `max_tokens` padded tokens."""
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i].ids))
        out: list[list[Hypothesis]] = [[] for _ in pieces]
        for batch in token_budget_batches([len(pieces[i].ids) for i in order], self.config.max_tokens):
            members = [order[i] for i in batch]
            for i, hyps in zip(members, self.engine.generate([pieces[i].ids for i in members])):
                out[i] = hyps
        return out

    def _result(self, parts: list[list[Hypothesis]], flags: dict[str, bool]) -> TextResult:
        """Join the best hypothesis of each piece of one input."""
        if not parts:
            return TextResult(text="", score=0.0, tokens=0, split=flags.get("split", False),
                              truncated=flags.get("truncated", False), empty=flags.get("empty", False))
        decode = self.package.target_tokenizer.decode
        text = " ".join(decode(hyps[0].tokens) for hyps in parts)
        score = sum(hyps[0].score for hyps in parts) / len(parts)
        nbest = tuple((decode(h.tokens), h.score) for h in parts[0]) if len(parts) == 1 and self.config.nbest > 1 else ()
        return TextResult(text=text, score=score, tokens=sum(len(h[0].tokens) for h in parts), nbest=nbest, **flags)


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
