"""Decoding, in layers: penalties and a pure search step (`penalties`, `search`), a generator
that owns the loop and the model's incremental state (`generator`), and a text layer that alone
knows strings and the tokenizer (`text`)."""

from s2s_core.generation.config import GenerationConfig
from s2s_core.generation.generator import Generator, Hypothesis
from s2s_core.generation.text import Summarizer, TextGenerator, TextResult, Translator

__all__ = ["GenerationConfig", "Generator", "Hypothesis", "Summarizer", "TextGenerator", "TextResult", "Translator"]
