"""Hugging Face BART-style tensor names -> our Transformer's state dict.

Marian, M2M-100/NLLB, BART and mBART share one layout (`modeling_bart.py` and its copies), here
without the `model.` prefix:
    shared.weight, lm_head.weight, final_logits_bias          (V, D), (V, D), (1, V)
    {encoder,decoder}.embed_positions.weight                   learned tables only
    {encoder,decoder}.layernorm_embedding, .layer_norm         embedding / final LayerNorms
    encoder.layers.i.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm}
    decoder.layers.i.{self_attn.*, self_attn_layer_norm, encoder_attn.{q,k,v,out}_proj,
                      encoder_attn_layer_norm, fc1, fc2, final_layer_norm}
Ours fuse q, k, v of self-attention into `qkv` and k, v of cross-attention into `kv` (rows in
that order). Vocabulary rows are reordered into our ids (`s2s_core.tokenizer.IdOrder`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from s2s_core.errors import CheckpointError
from s2s_core.models.config import TransformerConfig

ADDED_ROW_BIAS = -100.0
"""Logits bias of a row the importer adds (Marian's BOS): exp(-100) vanishes next to any real
token's probability, so log-probabilities are unchanged, and it stays finite for training."""


def reorder_rows(matrix: Tensor, origin_ids: list[int], fill: float = 0.0) -> Tensor:
    """(V, ...) rows in origin order -> (V', ...) in ours: row i is origin row origin_ids[i]; an
    origin id V (a row the origin lacks) gets `fill`."""
    extra = matrix.new_full((1, *matrix.shape[1:]), fill)
    return torch.cat([matrix, extra]).index_select(0, torch.tensor(origin_ids, dtype=torch.long))


def convert_weights(weights: dict[str, Tensor], config: TransformerConfig, origin_ids: list[int],
                    where: str) -> dict[str, Tensor]:
    """Our state dict (float32) for `config` from a checkpoint's tensors.

    Raises:
        CheckpointError: naming a tensor the checkpoint lacks.
    """
    get = _getter(weights, where)
    embedding = weights.get("shared.weight", weights.get("encoder.embed_tokens.weight"))
    if embedding is None:
        raise CheckpointError(where, "has no embedding table (shared.weight or encoder.embed_tokens.weight)")
    out = {"src_embedding.weight": reorder_rows(embedding, origin_ids)}
    if not config.tie_output:
        out["output_weight"] = reorder_rows(get("lm_head.weight"), origin_ids)
    if config.output_bias:
        bias = weights.get("final_logits_bias", embedding.new_zeros(1, embedding.shape[0]))
        out["output_bias"] = reorder_rows(bias.reshape(-1), origin_ids, fill=ADDED_ROW_BIAS)
    if config.positions == "learned":
        out["src_positions"] = get("encoder.embed_positions.weight")
        out["tgt_positions"] = get("decoder.embed_positions.weight")
    if config.embedding_norm:
        out |= _norm(get, "encoder.layernorm_embedding", "src_embedding_norm")
        out |= _norm(get, "decoder.layernorm_embedding", "tgt_embedding_norm")
    if config.has_final_norm():
        out |= _norm(get, "encoder.layer_norm", "encoder_norm") | _norm(get, "decoder.layer_norm", "decoder_norm")
    for i in range(config.encoder_layers):
        out |= _encoder_layer(get, f"encoder.layers.{i}", f"encoder_layers.{i}")
    for i in range(config.decoder_layers):
        out |= _decoder_layer(get, f"decoder.layers.{i}", f"decoder_layers.{i}")
    return {name: tensor.float().contiguous() for name, tensor in out.items()}


def _getter(weights: dict[str, Tensor], where: str) -> Callable[[str], Tensor]:
    def get(name: str) -> Tensor:
        if name not in weights:
            raise CheckpointError(where, f"has no tensor {name!r}")
        return weights[name]
    return get


def _norm(get: Callable[[str], Tensor], theirs: str, ours: str) -> dict[str, Tensor]:
    return {f"{ours}.weight": get(f"{theirs}.weight"), f"{ours}.bias": get(f"{theirs}.bias")}


def _linear(get: Callable[[str], Tensor], theirs: list[str], ours: str) -> dict[str, Tensor]:
    """One Linear of ours from one or more of theirs stacked by output rows (fused projections)."""
    return {f"{ours}.weight": torch.cat([get(f"{name}.weight") for name in theirs]),
            f"{ours}.bias": torch.cat([get(f"{name}.bias") for name in theirs])}


def _self_attention(get: Callable[[str], Tensor], theirs: str, ours: str) -> dict[str, Tensor]:
    return (_linear(get, [f"{theirs}.q_proj", f"{theirs}.k_proj", f"{theirs}.v_proj"], f"{ours}.qkv")
            | _linear(get, [f"{theirs}.out_proj"], f"{ours}.out"))


def _feed_forward(get: Callable[[str], Tensor], theirs: str, ours: str) -> dict[str, Tensor]:
    return (_linear(get, [f"{theirs}.fc1"], f"{ours}.ffn.inner") | _linear(get, [f"{theirs}.fc2"], f"{ours}.ffn.outer")
            | _norm(get, f"{theirs}.final_layer_norm", f"{ours}.ffn_block.norm"))


def _encoder_layer(get: Callable[[str], Tensor], theirs: str, ours: str) -> dict[str, Tensor]:
    return (_self_attention(get, f"{theirs}.self_attn", f"{ours}.attention")
            | _norm(get, f"{theirs}.self_attn_layer_norm", f"{ours}.attention_block.norm")
            | _feed_forward(get, theirs, ours))


def _decoder_layer(get: Callable[[str], Tensor], theirs: str, ours: str) -> dict[str, Tensor]:
    cross = f"{theirs}.encoder_attn"
    return (_self_attention(get, f"{theirs}.self_attn", f"{ours}.self_attention")
            | _norm(get, f"{theirs}.self_attn_layer_norm", f"{ours}.self_block.norm")
            | _linear(get, [f"{cross}.q_proj"], f"{ours}.cross_attention.q")
            | _linear(get, [f"{cross}.k_proj", f"{cross}.v_proj"], f"{ours}.cross_attention.kv")
            | _linear(get, [f"{cross}.out_proj"], f"{ours}.cross_attention.out")
            | _norm(get, f"{theirs}.encoder_attn_layer_norm", f"{ours}.cross_block.norm")
            | _feed_forward(get, theirs, ours))
