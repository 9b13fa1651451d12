"""Decoding options: one dataclass, checked once at the boundary (`s2s_core.config.build`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Literal

from s2s_core.config import at_least, resolve

TORCH_COMPUTE_TYPES = ("default", "float32", "int8")
"""What the torch engine runs (int8 on the CPU only); CTranslate2 runs every `compute_type`."""


@dataclass(kw_only=True)
class GenerationConfig:
    beam_size: int = 4
    """Hypotheses kept per sentence; 1 is greedy search (or plain sampling with `sampling`)."""
    max_len_a: float = 1.5
    """Output length limit `max_len_a * source_tokens + max_len_b` (source tokens include EOS)."""
    max_len_b: int = 10
    """See `max_len_a`."""
    max_length: int = 256
    """Hard cap on generated tokens (before EOS), whatever the source length."""
    min_length: int = 0
    """EOS is forbidden until this many tokens have been generated (the length limit wins)."""
    length_penalty: float = 1.0
    """GNMT alpha: hypotheses are ranked by log P / ((5 + length) / 6) ** alpha; 0 ranks by log P."""
    length_normalization: Literal["gnmt", "power"] = "gnmt"
    """How `length_penalty` divides log P: gnmt ((5 + length) / 6) ** alpha, or power length ** alpha
    (Hugging Face, fairseq, CTranslate2); length counts generated tokens with EOS."""
    limit_ending: Literal["eos", "forced-eos", "cut"] = "eos"
    """What ends a hypothesis at the length limit: eos (only EOS may follow, scored with its
    log-probability), forced-eos (EOS follows and scores 0: Hugging Face's `forced_eos_token_id`,
    its `max_length` = limit + 2), cut (the hypothesis stops at `limit` tokens without EOS, EOS
    included if it came last: Hugging Face without a forced EOS, its `max_length` = limit + 1)."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a hypothesis; 0 allows repeats."""
    nbest: int = 1
    """Hypotheses returned per sentence, best first (at most `beam_size`)."""
    sampling: bool = False
    """Sample each token instead of searching (free text generation); needs `beam_size` 1."""
    temperature: float = 1.0
    """Sampling: logits are divided by it (below 1 sharpens, above 1 flattens)."""
    top_k: int = 0
    """Sampling: keep only the k most likely tokens; 0 keeps all."""
    top_p: float = 1.0
    """Sampling: keep the smallest set of tokens whose probability reaches p (nucleus)."""
    seed: int = 0
    """Sampling: seed of the random generator (same seed, same batch: same outputs)."""
    max_tokens: int = 4096
    """Text layer: source tokens per batch (sentences are sorted by length and packed to this budget)."""
    max_source_tokens: int = 0
    """Text layer: longest source (tokens with EOS) before splitting/truncating; 0: the model's limit."""
    source_lang: str | None = None
    """Multilingual imported models: the source language code as the model writes it (NLLB
    eng_Latn, mBART en_XX, M2M-100 en); None: the package's default (given to `s2s import`)."""
    target_lang: str | None = None
    """Multilingual imported models: the target language code (NLLB ita_Latn, mBART it_IT, M2M-100
    it, multilingual Marian ita); None: the package's default. Checked against the model's codes."""
    engine: Literal["auto", "torch", "ctranslate2"] = "auto"
    """What runs the model: our PyTorch generator, or CTranslate2 on the package's export (`s2s
    export`); auto: CTranslate2 when the package has an export and ctranslate2 is installed."""
    compute_type: Literal["default", "float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                          "float16", "bfloat16"] = "default"
    """Weights/compute precision. default: float32 for torch, the export's own for CTranslate2;
    torch on the CPU also takes int8 (dynamic quantization); CTranslate2 takes them all."""

    def problems(self) -> list[str]:
        import math

        from s2s_core.config import at_most
        from s2s_core.models.size import search_problem  # loads the models package: only when checking

        out = at_least(self, 1, "beam_size", "nbest", "max_tokens")
        out += at_least(self, 0, "max_len_a", "max_len_b", "max_length", "min_length", "no_repeat_ngram_size",
                        "top_k", "length_penalty", "max_source_tokens")
        if self.nbest > self.beam_size >= 1:
            out.append(f"`nbest` must be <= `beam_size` ({self.beam_size}), but is {self.nbest}")
        if self.sampling and self.beam_size != 1:
            out.append(f"`beam_size` must be 1 with `sampling`, but is {self.beam_size}")
        if self.max_source_tokens == 1:  # a source piece needs a token besides its EOS
            out.append("`max_source_tokens` must be 0 (the model's limit) or >= 2, but is 1")
        if self.temperature <= 0:
            out.append(f"`temperature` must be > 0, but is {self.temperature}")
        if not 0 < self.top_p <= 1:
            out.append(f"`top_p` must be in (0, 1], but is {self.top_p}")
        # Upper bounds: a wider beam only allocates (quality peaks near 5-10, CTranslate2 and
        # Hugging Face stay far below 256), and every count goes into 64-bit tensors.
        out += at_most(self, 256, "beam_size", "nbest")
        out += at_most(self, 2**31 - 1, "max_len_b", "max_length", "min_length", "no_repeat_ngram_size", "top_k",
                       "max_tokens", "max_source_tokens")
        if not 0 <= self.seed < 2**64:  # torch's generator seeds are unsigned 64-bit
            out.append(f"`seed` must be in [0, 2**64), but is {self.seed}")
        for name in ("source_lang", "target_lang"):
            code = getattr(self, name)
            if code is not None and (not code.strip() or code != code.strip()):
                out.append(f"`{name}` must be a language code without spaces, but is {code!r}")
        if not out and math.isfinite(self.max_len_a):
            too_large = search_problem(self.beam_size, self.max_tokens, self.max_len_a, self.max_len_b, self.max_length)
            out += [too_large] if too_large else []
        return out

    def length_limit(self, source_tokens: int) -> int:
        """Most tokens (before EOS) generated for a source of `source_tokens` tokens."""
        return min(int(self.max_len_a * source_tokens) + self.max_len_b, self.max_length)


# Summaries are short whatever the source length (median 7 words from 51 here): a fixed length
# limit instead of one proportional to the source, no repeated trigrams (the usual fix for
# looping summaries), and length penalties that trade brevity against coverage.
DECODING_PRESETS: dict[str, Callable[[], GenerationConfig]] = {
    "translate": GenerationConfig,
    "summarize": partial(GenerationConfig, max_len_a=0.0, max_len_b=48, min_length=2, no_repeat_ngram_size=3,
                         length_penalty=1.0),
    "summarize-short": partial(GenerationConfig, max_len_a=0.0, max_len_b=24, min_length=2, no_repeat_ngram_size=3,
                               length_penalty=0.6),
    "summarize-long": partial(GenerationConfig, max_len_a=0.0, max_len_b=96, min_length=8, no_repeat_ngram_size=3,
                              length_penalty=2.0),
}
"""Named decoding builders (`preset=NAME`); a task uses the preset of its name unless told otherwise.
Options from a YAML file or `key=value` still override a preset's."""


def resolve_generation(config_file: str | Path | None, overrides: list[str], task: str = "translate") -> GenerationConfig:
    """Decoding options: defaults <- preset (`preset=NAME`, else the task's) <- YAML file <-
    key=value overrides, checked once.

    Raises:
        ConfigError: an unknown preset, key or bad value.
    """
    return resolve(GenerationConfig, config_file, overrides, DECODING_PRESETS, default_preset=task, kind="decoding")
