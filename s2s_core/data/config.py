"""Configuration of the `prepare` stage (typed; YAML and `key=value` overlays via s2s_core.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from s2s_core.config import at_least, at_most, probabilities

FORMATS = ("tsv", "jsonl", "parquet", "text")
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1


@dataclass(kw_only=True)
class ReaderConfig:
    format: Literal["auto", "tsv", "jsonl", "parquet", "text"] = "auto"
    """Input format; `auto` decides from the name (.tsv, .jsonl, .parquet, with optional .gz)."""
    source_field: str = "source"
    """JSONL field / Parquet column holding the source text."""
    target_field: str = "target"
    """JSONL field / Parquet column holding the target text."""
    source_lang: str = "en"
    """For aligned text files: input `corpus` means `corpus.<source_lang>` + `corpus.<target_lang>`."""
    target_lang: str = "it"
    """See `source_lang`."""
    keep_metadata: bool = True
    """Carry the other JSONL fields / Parquet columns into the shards."""

    def problems(self) -> list[str]:
        out = []
        if self.source_field == self.target_field:
            out.append(f"`source_field` and `target_field` must differ, but both are {self.source_field!r}")
        if self.source_lang == self.target_lang:
            out.append(f"`source_lang` and `target_lang` must differ, but both are {self.source_lang!r}")
        return out


@dataclass(kw_only=True)
class LanguageIdConfig:
    enabled: bool = False
    """Reject pairs whose source or target is confidently in another language (`wrong_language`)."""
    source: str = "en"
    """Expected source language (ISO 639-1 code, as py3langid names it)."""
    target: str = "it"
    """Expected target language."""
    min_chars: int = 20
    """Sides shorter than this (characters) are not judged: a short UI label says little."""
    min_confidence: float = 0.9
    """Reject only when another language has at least this probability (uncertain pairs are kept)."""

    def problems(self) -> list[str]:
        out = at_least(self, 0, "min_chars")
        if not 0 < self.min_confidence <= 1:
            out.append(f"`min_confidence` must be in (0, 1], but is {self.min_confidence}")
        return out


@dataclass(kw_only=True)
class CleanConfig:
    unicode_nfc: bool = True
    """Normalise both sides to Unicode NFC."""
    normalize_whitespace: bool = True
    """Collapse runs of whitespace (Unicode spaces too) to one space and trim the ends."""
    drop_control_chars: bool = True
    """Reject pairs containing C0/C1 control characters (NUL included) other than whitespace."""
    max_chars: int | None = 1000
    """Reject a pair when either side has more characters than this (None: no limit)."""
    max_tokens: int | None = 250
    """Reject a pair when either side has more whitespace-separated tokens (None: no limit)."""
    max_length_ratio: float | None = 3.0
    """Reject when the longer side has more than this times the characters of the shorter."""
    ratio_min_chars: int = 20
    """Apply the ratio test only when the longer side has at least this many characters."""
    drop_identical: bool = True
    """Reject pairs whose source equals their target (after normalisation)."""
    language_id: LanguageIdConfig = field(default_factory=LanguageIdConfig)
    """Language identification of both sides (off by default; on in deploy/prepare.yaml)."""

    def problems(self) -> list[str]:
        out = []
        for name in ("max_chars", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                out.append(f"`{name}` must be >= 1 (or null for no limit), but is {value}")
        if self.max_length_ratio is not None and not self.max_length_ratio >= 1:  # NaN fails too
            out.append(f"`max_length_ratio` must be >= 1 (or null), but is {self.max_length_ratio}")
        # The limits are compared with Arrow int32 lengths: a larger one cannot be an Arrow scalar.
        limits = [name for name in ("max_chars", "max_tokens") if getattr(self, name) is not None]
        return out + at_least(self, 0, "ratio_min_chars") + at_most(self, INT32_MAX, "ratio_min_chars", *limits)


@dataclass(kw_only=True)
class SplitConfig:
    valid_fraction: float = 0.01
    """Share of unique pairs put in `valid` (ignored when `valid_rows` is set or a valid input is given)."""
    test_fraction: float = 0.01
    """Share of unique pairs put in `test` (ignored when `test_rows` is set or a test input is given)."""
    valid_rows: int | None = None
    """Exact number of pairs for `valid`, chosen by hash."""
    test_rows: int | None = None
    """Exact number of pairs for `test`, chosen by hash."""
    seed: int = 0
    """Changes which pairs the hash split picks, deterministically."""

    def problems(self) -> list[str]:
        out = probabilities(self, "valid_fraction", "test_fraction")
        if self.valid_fraction + self.test_fraction >= 1:
            out.append("`valid_fraction + test_fraction` must be below 1, "
                       f"but is {self.valid_fraction + self.test_fraction:g}")
        for name in ("valid_rows", "test_rows"):
            value = getattr(self, name)
            if value is not None and value < 0:
                out.append(f"`{name}` must be >= 0, but is {value}")
            if value is not None and value > INT32_MAX:
                out.append(f"`{name}` must be <= {INT32_MAX}, but is {value}")
        if not 0 <= self.seed < 2**64:
            out.append(f"`seed` must be in [0, 2**64), but is {self.seed}")
        return out


@dataclass(kw_only=True)
class ShardConfig:
    input_mb_per_shard: float = 16.0
    """Shard count = ceil(total input MB / this); shards are hash ranges of the pair ids."""
    num_shards: int | None = None
    """Fixed shard count instead (the same count gives the same shards on any cluster)."""
    chunk_mb: float = 8.0
    """Size of the pieces of each input read in parallel; it never changes the output."""
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    """Parquet compression of the shards."""

    def problems(self) -> list[str]:
        out = []
        for name in ("input_mb_per_shard", "chunk_mb"):
            if not getattr(self, name) > 0:  # NaN fails too
                out.append(f"`{name}` must be > 0, but is {getattr(self, name)}")
        if self.num_shards is not None and not 1 <= self.num_shards <= 100_000:
            out.append(f"`num_shards` must be in [1, 100000], but is {self.num_shards}")
        return out


@dataclass(kw_only=True)
class TokenizerConfig:
    enabled: bool = True
    """Train a SentencePiece model on the train split."""
    model_type: Literal["unigram", "bpe"] = "unigram"
    """SentencePiece algorithm."""
    vocab_size: int = 8000
    """Vocabulary size, special tokens (pad, unk, bos, eos) included; 16 to 1,000,000."""
    shared: bool = True
    """One vocabulary for source and target; False trains one model per side."""
    character_coverage: float = 1.0
    """Share of characters covered by the vocabulary (0.9995 suits large alphabets)."""
    sample_pairs: int = 200_000
    """Pairs of the train split used for training, taken in id (hash) order: deterministic."""
    max_sentence_chars: int = 2000
    """Longer training sentences are skipped by SentencePiece; at most 1,000,000."""
    byte_fallback: bool = False
    """Encode unknown characters as bytes instead of <unk>."""
    threads: int = 2
    """Threads SentencePiece trains with; at most 1024."""
    seed: int = 1
    """SentencePiece's random seed (its default is a fresh one per run, which is not reproducible)."""
    reuse: str | None = field(default=None, metadata={"aliases": ("from",)})
    """`tokenizer.from=PKG` (or `tokenizer.reuse=`): a model package, or a tokenizer directory (a
    package's `tokenizer/`), local or s3://, whose tokenizer is copied instead of training one (the
    other tokenizer settings then do not apply). `s2s train init_from=PKG` needs it: to fine-tune
    an imported model, or go on training one of ours, on this dataset."""

    def problems(self) -> list[str]:
        out = at_least(self, 16, "vocab_size")
        if not 0.9 <= self.character_coverage <= 1.0:
            out.append(f"`character_coverage` must be in [0.9, 1.0], but is {self.character_coverage}")
        out += at_least(self, 1, "sample_pairs", "max_sentence_chars", "threads")
        # SentencePiece takes these as 32-bit ints (max_sentence_chars as 4 bytes a character, the
        # seed unsigned), and starts every thread it is asked for.
        out += at_most(self, 1_000_000, "vocab_size", "max_sentence_chars") + at_most(self, 1024, "threads")
        out += at_most(self, INT32_MAX, "sample_pairs")
        if not 0 <= self.seed <= UINT32_MAX:
            out.append(f"`seed` must be in [0, {UINT32_MAX}], but is {self.seed}")
        return out


@dataclass(kw_only=True)
class PrepareConfig:
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    """How inputs are parsed."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Normalisation and filters."""
    split: SplitConfig = field(default_factory=SplitConfig)
    """How unique pairs are divided into train/valid/test."""
    shards: ShardConfig = field(default_factory=ShardConfig)
    """Output sharding and parallelism."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """SentencePiece training."""
