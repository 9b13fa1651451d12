"""CTranslate2 export: a model package's Transformer as a CTranslate2 model directory, converted
by our own converter on `ctranslate2.specs` (CTranslate2's converters read other toolkits' files).

Written into the export directory (by default `PKG/ctranslate2`, inside the package, where
`engine=auto` finds it; the package's own files and its id are left unchanged):
    model.bin, config.json, *vocabulary.json   CTranslate2's files
    export.json   the SHA-256 of the package weights and config it was made from, the
                  quantization, the ctranslate2 version: an export of another package is
                  refused by name instead of silently translating with other weights

Imported packages (`s2s import`) are written in their checkpoint's own vocabulary order, without
the rows the importer added (Marian's BOS), so that the export is the model CTranslate2's own
converter makes of that checkpoint (`TransformersConverter`): the same tokens, the same rows.
A decoder that starts from PAD whose embedding row is zero (Marian) starts from a zero vector
instead, and PAD is left out, as CTranslate2's Marian converter does. The layer mapping is in
`s2s_core.export.ct2_layers`.
LSTM models have no CTranslate2 counterpart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.export.ct2_layers import Layout, transformer_spec, unsupported
from s2s_core.package import METADATA, ModelPackage
from s2s_core.tokenizer import PAD_ID, Tokenizer

__all__ = ["EXPORT_DIR", "EXPORT_INFO", "QUANTIZATIONS", "Layout", "check_export", "convert_transformer",
           "export_ctranslate2", "export_layout", "export_start_token", "export_vocabulary", "find_export", "import_ctranslate2",
           "transformer_spec", "vocabulary"]

EXPORT_DIR = "ctranslate2"
"""Where `s2s export` writes by default, inside the package; where `engine=auto` looks."""
EXPORT_INFO = "export.json"
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
INSTALL_HINT = "pip install 's2s-pipeline[ct2]'"


def import_ctranslate2() -> Any:
    """The ctranslate2 module.

    Raises:
        ConfigError: if it is not installed, naming the extra that installs it.
    """
    try:
        import ctranslate2
    except ImportError:
        raise ConfigError([f"the CTranslate2 engine needs the ctranslate2 package, which is not installed: "
                           f"{INSTALL_HINT}"]) from None
    return ctranslate2


def export_ctranslate2(package: ModelPackage, output: Path, quantization: str = "float32") -> dict:
    """Convert `package` into the CTranslate2 model directory `output` (replaced if it exists);
    returns the export.json record.

    Raises:
        ConfigError: for an LSTM package, a model option CTranslate2 cannot express, token strings
            that repeat, an unknown quantization or a missing ctranslate2.
    """
    layout = export_layout(package) if package.config.family == "transformer" else None
    convert_transformer(package.model, package.config, vocabulary(package.source_tokenizer),
                        vocabulary(package.target_tokenizer), output, quantization, layout)
    info = {"format": "ctranslate2", "quantization": quantization, "ctranslate2": import_ctranslate2().__version__,
            **package_fingerprint(package.metadata)}
    (output / EXPORT_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def convert_transformer(model: Any, config: Any, source_vocab: list[str], target_vocab: list[str], output: Path,
                        quantization: str = "float32", layout: Layout | None = None) -> None:
    """Write our Transformer `model` (built from `config`) as a CTranslate2 model directory;
    the vocabularies are the token strings by id (special ids as in s2s_core.tokenizer);
    `layout`: the embedding rows to write, in order (None: all of them, in id order).

    Raises:
        ConfigError: for an LSTM config, a model option CTranslate2 cannot express, token strings
            that repeat, an unknown quantization or a missing ctranslate2.
    """
    if config.family != "transformer":
        raise ConfigError([f"CTranslate2 has no {config.family.upper()} models: only Transformer packages can be "
                           "exported (the torch engine, with compute_type=int8, serves the others)"])
    if quantization not in QUANTIZATIONS:
        raise ConfigError([f"unknown quantization {quantization!r} (valid: {', '.join(QUANTIZATIONS)})"])
    layout = layout or Layout.identity(len(source_vocab), len(target_vocab))
    problems = unsupported(config) + _repeated_tokens(source_vocab, layout.source_rows, "source")
    problems += _repeated_tokens(target_vocab, layout.target_rows, "target")
    if problems:
        raise ConfigError([f"CTranslate2 cannot express this model ({'; '.join(problems)}): run it with engine=torch"])
    import_ctranslate2()
    from ctranslate2.converters import Converter

    class ModelConverter(Converter):
        def _load(self):
            with torch.no_grad():
                return transformer_spec(model, config, source_vocab, target_vocab, layout)

    ModelConverter().convert(str(output), quantization=None if quantization == "float32" else quantization,
                             force=True)


def export_layout(package: ModelPackage) -> Layout:
    """The rows a package's export writes: every id in the tokenizer's own order (an imported
    one's: its checkpoint's order, without added rows), less PAD where the decoder starts from
    a zero PAD row (Marian: CTranslate2 then starts from a zero vector, and PAD is no output)."""
    source, target = _origin_rows(package.source_tokenizer), _origin_rows(package.target_tokenizer)
    model: Any = package.model  # a TransformerModel (the caller checked the family)
    zero_start = (package.config.decoder_start_id == PAD_ID
                  and not bool(model.target_embedding.weight[PAD_ID].detach().any()))
    if zero_start:
        source, target = [i for i in source if i != PAD_ID], [i for i in target if i != PAD_ID]
    return Layout(source, target, zero_start)


def _origin_rows(tokenizer: Tokenizer) -> list[int]:
    """Our ids in the tokenizer's own order: an imported one's checkpoint ids 0..size-1 (the BOS
    the importer adds to a vocabulary without one is left out), else ours."""
    order = getattr(tokenizer, "order", None)
    if order is None:
        return list(range(tokenizer.vocab_size))
    return order.our_ids()[: order.size]


def _repeated_tokens(vocab: list[str], rows: list[int], side: str) -> list[str]:
    """CTranslate2 takes and returns token strings: two rows with one string cannot both be written."""
    seen: dict[str, int] = {}
    for row in rows:
        if vocab[row] in seen:
            return [f"the {side} tokens {seen[vocab[row]]} and {row} are both {vocab[row]!r}"]
        seen[vocab[row]] = row
    return []


def export_vocabulary(export: Path, side: str) -> list[str]:
    """The tokens of an export's `side` ('source' or 'target'), by CTranslate2 id: its
    `{side}_vocabulary` file, or the `shared_vocabulary` one (JSON, or text one token a line)."""
    for name in (f"{side}_vocabulary", "shared_vocabulary"):
        if (export / f"{name}.json").is_file():
            return json.loads((export / f"{name}.json").read_text(encoding="utf-8"))
        if (export / f"{name}.txt").is_file():
            return (export / f"{name}.txt").read_text(encoding="utf-8").split("\n")[:-1]
    raise CheckpointError(str(export), f"has no {side} vocabulary file: run `s2s export` again")


def export_start_token(export: Path) -> str | None:
    """The token an export starts every target from (config.json `decoder_start_token`); None:
    the caller gives it as the first token of the target prefix (a model that starts from its
    target language code, mBART-25)."""
    return json.loads((export / "config.json").read_text(encoding="utf-8")).get("decoder_start_token")


def package_fingerprint(metadata: dict) -> dict:
    """The SHA-256 of a package's weights and config, from its metadata.json file list."""
    files = metadata.get("files", {})
    return {"weights_sha256": files.get("model.safetensors", {}).get("sha256"),
            "config_sha256": files.get("config.json", {}).get("sha256")}


def find_export(package: ModelPackage) -> Path | None:
    """The package's own export directory, if `s2s export` wrote one into it."""
    if package.directory is None:
        return None
    candidate = package.directory / EXPORT_DIR
    return candidate if (candidate / EXPORT_INFO).is_file() else None


def check_export(package: ModelPackage, export: Path) -> dict:
    """The export.json of `export`, checked against the package it is used with.

    Raises:
        CheckpointError: an incomplete export, or one made from another package.
    """
    info_path = export / EXPORT_INFO
    if not info_path.is_file() or not (export / "model.bin").is_file():
        raise CheckpointError(str(export), "incomplete CTranslate2 export (no export.json or model.bin): run "
                                           f"`s2s export --model {package.directory}` again")
    info = json.loads(info_path.read_text())
    expected = package_fingerprint(package.metadata)
    if {key: info.get(key) for key in expected} != expected:
        raise CheckpointError(str(export), f"was exported from another package (weights or config SHA-256 differ "
                                           f"from {package.directory}/{METADATA}): run "
                                           f"`s2s export --model {package.directory}` again")
    return info


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """Token strings by id, as CTranslate2 maps tokens to ids (SentencePiece pieces are unique)."""
    return list(tokenizer)
