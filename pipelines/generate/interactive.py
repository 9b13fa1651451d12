"""Quick use: `s2s translate --model PKG --text "..."` or lines on stdin; no Ray, no Prefect.

Stdin is read in blocks, so a long stream starts printing early and memory stays bounded;
within a block the text layer sorts by length and batches by tokens.
"""

from __future__ import annotations

import itertools
import sys
from typing import Iterable, Iterator, TextIO

from pipelines.packages import open_text_layer
from pipelines.settings import Settings
from pipelines.storage import Storage, absolute
from s2s_core.generation import GenerationConfig

BLOCK_LINES = 512


def generate_lines(settings: Settings, task: str, model: str, config: GenerationConfig, texts: list[str] | None,
                   stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Print one output line per input text (`texts`, else each stdin line); returns 0."""
    text_layer = open_text_layer(Storage(settings.s3), absolute(model), task, config)
    out = stdout or sys.stdout
    lines = texts if texts is not None else (line.rstrip("\n") for line in (stdin or sys.stdin))
    for block in _blocks(lines, BLOCK_LINES):
        for result in text_layer(block):
            out.write(result.text.replace("\n", " ") + "\n")
        out.flush()
    return 0


def _blocks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(lines)
    while block := list(itertools.islice(iterator, size)):
        yield block
