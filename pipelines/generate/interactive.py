"""Quick use: `s2s translate --model PKG --text "..."` or lines on stdin; no Ray, no Prefect.

Stdin is read in blocks, so a long stream starts printing early and memory stays bounded;
within a block the text layer sorts by length and batches by tokens.

Stdin is read as bytes and decoded line by line: a line that is not UTF-8 (or an argument that
is not: Python keeps its bytes as lone surrogates) gets an empty output line, so outputs stay
aligned with inputs, and the run ends with one error line naming it (exit 3).
"""

from __future__ import annotations

import itertools
import sys
from typing import Iterable, Iterator, TextIO

from pipelines.generate.plan import check_languages
from pipelines.generate.rows import text_problem
from pipelines.packages import open_text_layer
from pipelines.settings import Settings
from pipelines.storage import Storage, absolute
from s2s_core.errors import InputError
from s2s_core.generation import GenerationConfig

BLOCK_LINES = 512
NAMED_BAD_LINES = 5  # the error line names this many bad lines, then counts the rest


def generate_lines(settings: Settings, task: str, model: str, config: GenerationConfig, texts: list[str] | None,
                   stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Print one output line per input text (`texts`, else each stdin line); returns 0.

    Raises:
        ConfigError: a language option the model cannot take.
        InputError: some lines could not be used (after every other line got its output).
    """
    storage, model = Storage(settings.s3), absolute(model)
    check_languages(storage, model, config)  # an unknown code: one line before the model loads
    text_layer = open_text_layer(storage, model, task, config)
    out = stdout or sys.stdout
    lines = _checked(texts) if texts is not None else _stdin_lines(stdin or sys.stdin)
    bad: list[tuple[int, str]] = []
    for block in _blocks(lines, BLOCK_LINES):
        good = [text for _, text, problem in block if problem is None]
        results = iter(text_layer(good))
        for number, _, problem in block:
            if problem is not None:
                bad.append((number, problem))
            out.write("\n" if problem is not None else next(results).text.replace("\n", " ") + "\n")
        out.flush()
    if bad:
        raise InputError(*(("--text", _bad_lines_message(bad, "argument")) if texts is not None
                           else ("stdin", _bad_lines_message(bad, "line"))))
    return 0


Line = tuple[int, str, "str | None"]
"""(line number from 1, text, why it cannot be used or None)."""


def _checked(texts: Iterable[str]) -> Iterator[Line]:
    for number, text in enumerate(texts, start=1):
        yield number, text, text_problem(text, escaped_bytes=True)


def _stdin_lines(stream: TextIO) -> Iterator[Line]:
    """Each line of `stream`, decoded on its own (its bytes when it has a buffer)."""
    raw = getattr(stream, "buffer", None)
    if raw is None:  # a text stream without bytes (a test's StringIO): already decoded
        yield from _checked(line.rstrip("\n").rstrip("\r") for line in stream)
        return
    for number, line in enumerate(raw, start=1):
        line = line.rstrip(b"\n").rstrip(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, "", f"invalid UTF-8 byte 0x{line[err.start]:02x} at column {err.start + 1}"
            continue
        yield number, text, text_problem(text)


def _bad_lines_message(bad: list[tuple[int, str]], what: str) -> str:
    """One line for every bad input: `what` is 'line' or 'argument'."""
    if len(bad) == 1:
        return f"{what} {bad[0][0]}: {bad[0][1]}; its output line is empty"
    named = ", ".join(str(number) for number, _ in bad[:NAMED_BAD_LINES])
    more = f" and {len(bad) - NAMED_BAD_LINES} more" if len(bad) > NAMED_BAD_LINES else ""
    return (f"{len(bad)} {what}s cannot be used ({what}s {named}{more}; {what} {bad[0][0]}: {bad[0][1]}); "
            "their output lines are empty")


def _blocks(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    iterator = iter(lines)
    while block := list(itertools.islice(iterator, size)):
        yield block
