"""Decoding, in layers: penalties and a pure search step (`penalties`, `search`), a generator
that owns the loop and the model's incremental state (`generator`), and a text layer that alone
knows strings and the tokenizer (`text`)."""

from s2s_core.generation.config import GenerationConfig
from s2s_core.generation.generator import Generator, Hypothesis
from s2s_core.generation.text import Summarizer, TextGenerator, TextResult, Translator

TEXT_LAYERS: dict[str, type[TextGenerator]] = {"translate": Translator, "summarize": Summarizer}
"""The text layer of each task: Translator splits long inputs into sentences, Summarizer truncates them."""

__all__ = ["TEXT_LAYERS", "GenerationConfig", "Generator", "Hypothesis", "Summarizer", "TextGenerator", "TextResult", "Translator"]
