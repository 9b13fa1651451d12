"""Importing pretrained Hugging Face checkpoints (Marian/OPUS-MT, M2M-100/NLLB, BART/mBART) as our
model packages: a local `save_pretrained` directory in, a local package directory out.

No network, no `transformers`: config.json is mapped onto our one Transformer's options
(`families`), the tensors are renamed and fused (`weights`), the vocabulary is reordered so that
pad/unk/bos/eos get our fixed ids 0-3 (`s2s_core.tokenizer.IdOrder`; Marian, which has no BOS,
gets one added), and the tokenizer files are kept behind our `Tokenizer` interface (`vocab`).
What cannot be expressed is refused with one line naming it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from s2s_core.errors import CheckpointError
from s2s_core.importers.families import FAMILIES, SUPPORTED, Family, family_of, transformer_config
from s2s_core.importers.source import Checkpoint, read_checkpoint
from s2s_core.importers.vocab import Templates, read_vocabulary, special_ids, templates, write_tokenizer
from s2s_core.importers.weights import convert_weights
from s2s_core.models import TransformerConfig, build_model
from s2s_core.package import save_package
from s2s_core.tokenizer import IdOrder

__all__ = ["FAMILIES", "SUPPORTED", "ImportResult", "import_checkpoint"]


@dataclass(frozen=True)
class ImportResult:
    """What `import_checkpoint` wrote."""

    directory: Path
    """The model package."""
    family: str
    """marian, m2m_100, bart or mbart."""
    config: TransformerConfig
    metadata: dict[str, Any]
    """metadata.json as written (without its file index)."""


def import_checkpoint(source: Path, output: Path, *, source_language: str | None = None,
                      target_language: str | None = None, allow_pickle: bool = False,
                      source_uri: str | None = None) -> ImportResult:
    """Convert the Hugging Face checkpoint directory `source` into a model package at `output`
    (created; files already there are replaced).

    `source_language`/`target_language`: language codes of multilingual families, as their
    tokenizer writes them (required for m2m_100 and mbart: `ita_Latn` for NLLB, `it` for
    M2M-100, `it_IT` for mBART; optional for Marian: a target `ita` becomes the `>>ita<<` token).
    `allow_pickle`: accept a `pytorch_model.bin` (loaded with `torch.load(weights_only=True)`).
    `source_uri`: where the checkpoint came from, recorded instead of the local path.

    Raises:
        CheckpointError: an unsupported model type, missing or unreadable files, pickled weights
            without `allow_pickle`, a tokenizer that disagrees with the model, a vocabulary size
            that does not match the embedding table, a config feature we cannot express.
        ConfigError: a language argument missing where required, or unknown to the tokenizer.
    """
    checkpoint = read_checkpoint(source, allow_pickle)
    where = str(source / "config.json")
    family = family_of(checkpoint.config, where)
    rows = _embedding_rows(checkpoint, where)
    vocab = read_vocabulary(checkpoint, family)
    order = special_ids(vocab, checkpoint.config, rows, str(source))
    tokens = {i: token for token, i in vocab.ids.items()}
    rows_of = templates(family, vocab, checkpoint.generation, tokens, source_language, target_language)
    config = _model_config(checkpoint, family, order, _decoder_start(checkpoint, vocab.ids, rows_of, rows, where), where)
    model = build_model(config)
    _load(model, convert_weights(checkpoint.weights, config, order.origin_ids(), where), where)
    metadata = _metadata(checkpoint, family, source_uri or str(source.resolve()), source_language, target_language)
    with tempfile.TemporaryDirectory(prefix="s2s-import-") as scratch:
        write_tokenizer(Path(scratch) / "tokenizer", checkpoint, vocab, order, rows_of, family)
        save_package(output, model, config, Path(scratch) / "tokenizer", metadata)
    return ImportResult(output, family.name, config, metadata)


def _embedding_rows(checkpoint: Checkpoint, where: str) -> int:
    """Rows of the embedding table, checked against config.json's vocab_size."""
    table = checkpoint.weights.get("shared.weight", checkpoint.weights.get("encoder.embed_tokens.weight"))
    if table is None or table.dim() != 2:
        raise CheckpointError(str(checkpoint.directory), "has no embedding table (shared.weight)")
    if checkpoint.config.get("vocab_size") != table.shape[0]:
        raise CheckpointError(where, f"vocab_size is {checkpoint.config.get('vocab_size')} but the embedding table has "
                                     f"{table.shape[0]} rows")
    return int(table.shape[0])


def _decoder_start(checkpoint: Checkpoint, ids: dict[str, int], rows_of: Templates, rows: int, where: str) -> int:
    """The checkpoint's decoder start token id (before reordering)."""
    start = ids[rows_of.decoder_start] if rows_of.decoder_start else checkpoint.generation.get(
        "decoder_start_token_id", checkpoint.config.get("decoder_start_token_id"))
    if not isinstance(start, int) or not 0 <= start < rows:
        raise CheckpointError(where, f"decoder_start_token_id must be an id below {rows}, but is {start!r}")
    return start


def _model_config(checkpoint: Checkpoint, family: Family, order: IdOrder, start: int, where: str) -> TransformerConfig:
    """Our config; an added BOS row needs the logits bias that keeps it out of every distribution."""
    config = checkpoint.config
    tied = bool(config.get("tie_word_embeddings", True))
    if not tied and "lm_head.weight" not in checkpoint.weights:
        raise CheckpointError(where, "tie_word_embeddings is false but the checkpoint has no lm_head.weight")
    ours = transformer_config(family, config, len(order.origin_ids()), tied, order.our_ids()[start], where)
    if order.bos is None:
        ours = dataclasses.replace(ours, output_bias=True)
    problems = ours.problems()
    if problems:
        raise CheckpointError(where, f"gives an invalid model config: {'; '.join(problems)}")
    return ours


def _load(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise CheckpointError(where, f"tensor shapes do not match config.json ({detail[:300]})") from None


def _metadata(checkpoint: Checkpoint, family: Family, source: str, source_language: str | None,
              target_language: str | None) -> dict[str, Any]:
    """metadata.json: where the package came from (every source file's SHA-256), what was ignored,
    and the checkpoint's own decoding settings in our options."""
    config = checkpoint.config
    ignored = [f"{key}={config[key]}" for key in ("activation_dropout", "encoder_layerdrop", "decoder_layerdrop")
               if config.get(key)]
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in checkpoint.weights.values()})
    return {"origin": {"family": family.name, "model_type": config.get("model_type"), "source": source,
                       "files": checkpoint.files, "dtype": dtypes, "ignored_training_options": ignored,
                       "languages": {"source": source_language, "target": target_language}},
            "decoding": _decoding(checkpoint.generation)}


def _decoding(generation: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's generation settings as our `GenerationConfig` options (Hugging Face's
    `max_length` counts the decoder start token, and the forced EOS when there is one)."""
    forced_eos = generation.get("forced_eos_token_id") is not None
    out: dict[str, Any] = {"length_normalization": "power", "limit_ending": "forced-eos" if forced_eos else "cut",
                           "beam_size": int(generation.get("num_beams", 1)),
                           "length_penalty": float(generation.get("length_penalty", 1.0)),
                           "no_repeat_ngram_size": int(generation.get("no_repeat_ngram_size", 0) or 0)}
    if isinstance(generation.get("max_length"), int):
        limit = max(generation["max_length"] - (2 if forced_eos else 1), 0)
        out |= {"max_len_a": 0.0, "max_len_b": limit, "max_length": limit}
    return out
