"""CTranslate2 export: a model package's Transformer as a CTranslate2 model directory, converted
by our own converter on `ctranslate2.specs` (CTranslate2's converters only know other toolkits).

Written into the export directory (by default `PKG/ctranslate2`, inside the package, where
`engine=auto` finds it; the package's own files and its id are left unchanged):
    model.bin, config.json, *vocabulary.json   CTranslate2's files
    export.json   the SHA-256 of the package weights and config it was made from, the
                  quantization, the ctranslate2 version: an export of another package is
                  refused by name instead of silently translating with other weights

How our Transformer maps onto CTranslate2's (`s2s_core.models.transformer`):
- self-attention: our fused `qkv` projection is CTranslate2's `linear[0]` (rows q, k, v in that
  order, as both expect); cross-attention: `q` -> `linear[0]`, fused `kv` -> `linear[1]`;
  the output projection is `linear[-1]` in both;
- each sublayer's LayerNorm is that sublayer's `layer_norm` there, with the same pre/post-norm
  flag; pre-norm adds one final LayerNorm per stack in both;
- positions: our sinusoidal table interleaves sin and cos columns, CTranslate2's built-in one
  concatenates them, so our table itself is exported (this also sets the longest sequence);
- embeddings are scaled by sqrt(d_model) or not, per config; shared tables and a tied output
  projection are the same arrays, which CTranslate2 stores once.
LSTM models have no CTranslate2 counterpart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.package import METADATA, ModelPackage
from s2s_core.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer

EXPORT_DIR = "ctranslate2"
"""Where `s2s export` writes by default, inside the package; where `engine=auto` looks."""
EXPORT_INFO = "export.json"
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
INSTALL_HINT = "pip install 's2s-pipeline[ct2]'"
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which our models use


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
        ConfigError: for an LSTM package, an unknown quantization or a missing ctranslate2.
    """
    convert_transformer(package.model, package.config, vocabulary(package.source_tokenizer),
                        vocabulary(package.target_tokenizer), output, quantization)
    info = {"format": "ctranslate2", "quantization": quantization, "ctranslate2": import_ctranslate2().__version__,
            **package_fingerprint(package.metadata)}
    (output / EXPORT_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def convert_transformer(model: Any, config: Any, source_vocab: list[str], target_vocab: list[str], output: Path,
                        quantization: str = "float32") -> None:
    """Write our Transformer `model` (built from `config`) as a CTranslate2 model directory;
    the vocabularies are the token strings by id (special ids as in s2s_core.tokenizer).

    Raises:
        ConfigError: for an LSTM config, an imported model's options, an unknown quantization or a
            missing ctranslate2.
    """
    if config.family != "transformer":
        raise ConfigError([f"CTranslate2 has no {config.family.upper()} models: only Transformer packages can be "
                           "exported (the torch engine, with compute_type=int8, serves the others)"])
    if quantization not in QUANTIZATIONS:
        raise ConfigError([f"unknown quantization {quantization!r} (valid: {', '.join(QUANTIZATIONS)})"])
    unsupported = config.non_default_options()
    if unsupported:  # an imported model's options: this converter knows only our own Transformer
        raise ConfigError([f"this package's model uses options the CTranslate2 export does not write yet "
                           f"({', '.join(unsupported)}): run it with engine=torch"])
    import_ctranslate2()
    from ctranslate2.converters import Converter

    class ModelConverter(Converter):
        def _load(self):
            return transformer_spec(model, config, source_vocab, target_vocab)

    ModelConverter().convert(str(output), quantization=None if quantization == "float32" else quantization,
                             force=True)


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


def transformer_spec(model: Any, config: Any, source: list[str], target: list[str]) -> Any:
    """The `ctranslate2.specs.TransformerSpec` of our Transformer, weights and vocabularies set."""
    from ctranslate2.specs import common_spec, transformer_spec as specs

    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}[config.activation]
    spec = specs.TransformerSpec.from_config((config.encoder_layers, config.decoder_layers), config.heads,
                                             pre_norm=config.norm == "pre", activation=activation)
    positions = _numpy(model.positions)
    _set_inputs(spec.encoder, model.src_embedding.weight, positions, config.scale_embeddings)
    _set_inputs(spec.decoder, model.target_embedding.weight, positions, config.scale_embeddings)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder_layers):
        _set_attention(layer_spec.self_attention, layer.attention, layer.attention_block.norm, fused=[layer.attention.qkv])
        _set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_block.norm)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder_layers):
        _set_attention(layer_spec.self_attention, layer.self_attention, layer.self_block.norm,
                       fused=[layer.self_attention.qkv])
        _set_attention(layer_spec.attention, layer.cross_attention, layer.cross_block.norm,
                       fused=[layer.cross_attention.q, layer.cross_attention.kv])
        _set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_block.norm)
    if config.norm == "pre":
        _set_norm(spec.encoder.layer_norm, model.encoder_norm)
        _set_norm(spec.decoder.layer_norm, model.decoder_norm)
    spec.decoder.projection.weight = _numpy(model.output_matrix())
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    spec.register_source_vocabulary(source)
    spec.register_target_vocabulary(target)
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = target[UNK_ID], target[BOS_ID], target[EOS_ID]
    spec.config.decoder_start_token = target[BOS_ID]  # our decoder starts from BOS, like fairseq's from EOS
    return spec


def _numpy(tensor) -> Any:
    return tensor.detach().float().cpu().numpy().copy()


def _set_inputs(spec, embedding, positions, scale: bool) -> None:
    (spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings).weight = _numpy(embedding)
    spec.position_encodings.encodings = positions
    spec.scale_embeddings = bool(scale)


def _set_attention(spec, attention, norm, fused: list) -> None:
    """`fused`: the input projections in CTranslate2's order (self: [qkv]; cross: [q, kv])."""
    for linear_spec, linear in zip(spec.linear, [*fused, attention.out]):
        _set_linear(linear_spec, linear)
    _set_norm(spec.layer_norm, norm)


def _set_ffn(spec, ffn, norm) -> None:
    _set_linear(spec.linear_0, ffn.inner)
    _set_linear(spec.linear_1, ffn.outer)
    _set_norm(spec.layer_norm, norm)


def _set_linear(spec, linear) -> None:
    spec.weight = _numpy(linear.weight)
    if linear.bias is not None:
        spec.bias = _numpy(linear.bias)


def _set_norm(spec, norm) -> None:
    spec.gamma = _numpy(norm.weight)
    spec.beta = _numpy(norm.bias)
