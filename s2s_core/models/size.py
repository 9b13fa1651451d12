"""Memory estimates from configs alone, so that a config that cannot fit is refused before any
allocation (a `d_model` of 1e9 would otherwise try to allocate terabytes, and die on a worker
with no reason given).

`estimate_parameters` counts exactly what the model classes build (a test compares it with
built models); `estimate_bytes` turns the count into float32 memory, for inference or for
training (weights, gradients and AdamW's two moments). `search_bytes` bounds the tensors beam
search keeps per batch, from the decoding options alone.
"""

from __future__ import annotations

from typing import Any

GB = 10**9
DEFAULT_MAX_MODEL_GB = 64.0
"""Largest estimated model memory accepted unless the caller passes another limit
(`pipelines.settings`: S2S_MAX_MODEL_GB). 64 GB is 16e9 parameters to load, 4e9 to train."""
BYTES_PER_PARAMETER = 4
"""float32: how models are built, trained and stored."""
TRAINING_COPIES = 4
"""Training holds each parameter 4 times: the weight, its gradient and AdamW's two moments."""
MAX_SEARCH_GB = 8.0
"""Largest estimated beam-search memory per batch accepted by the decoding options' check."""


def estimate_parameters(config: Any) -> int:
    """The number of parameter values `build_model(config)` would create (shared and tied
    tables counted once, as `num_parameters` counts them).

    Raises:
        ValueError: an unknown model family.
    """
    if config.family == "transformer":
        return _transformer_parameters(config)
    if config.family == "lstm":
        return _lstm_parameters(config)
    raise ValueError(f"unknown model family {config.family!r}")


def estimate_bytes(config: Any, training: bool = False) -> int:
    """float32 memory of the model's parameters; with `training`, of everything the optimiser
    keeps per parameter too (activations come on top and depend on the batch)."""
    return estimate_parameters(config) * BYTES_PER_PARAMETER * (TRAINING_COPIES if training else 1)


def size_problem(config: Any, max_bytes: int, training: bool = False) -> str | None:
    """Why `config` is too large to build under `max_bytes` (with the estimate), or None."""
    need = estimate_bytes(config, training)
    if need <= max_bytes:
        return None
    purpose = "to train (weights, gradients, optimiser state)" if training else "for its weights"
    return (f"a {config.family} of about {estimate_parameters(config):.3g} parameters needs about "
            f"{_gb(need)} {purpose}, more than the limit of {_gb(max_bytes)}")


def search_bytes(beam_size: int, max_tokens: int, max_len_a: float, max_len_b: int, max_length: int) -> int:
    """Upper bound on the search tensors of one batch: every row's 2K candidates (float32 score
    and int64 id) and its token history (int64).

    A batch holds at most `max_tokens` sentences (every source has at least its EOS), so at most
    R = beam_size * max_tokens rows; sentences of S tokens number at most max_tokens / S and
    generate at most a * S + b tokens, so the history holds at most R * min(a + b, max_length) ids.
    """
    rows = beam_size * max_tokens
    history = min(max_len_a + max_len_b, max_length)
    return int(rows * (2 * beam_size * (4 + 8) + history * 8))


def search_problem(beam_size: int, max_tokens: int, max_len_a: float, max_len_b: int, max_length: int,
                   max_gb: float = MAX_SEARCH_GB) -> str | None:
    """Why these decoding options need too much search memory per batch (with the estimate), or None."""
    need = search_bytes(beam_size, max_tokens, max_len_a, max_len_b, max_length)
    if need <= max_gb * GB:
        return None
    return (f"`beam_size` {beam_size} with `max_tokens` {max_tokens} needs up to {_gb(need)} of search "
            f"tensors per batch, more than {_gb(max_gb * GB)}: lower `max_tokens` or `beam_size`")


def _gb(count: float) -> str:
    gigabytes = count / GB
    if gigabytes >= 100_000:  # a damaged width gives 20 digits: the exponent is what matters
        return f"{gigabytes:.2e} GB"
    return f"{gigabytes:,.1f} GB" if gigabytes >= 0.1 else f"{gigabytes:.2g} GB"


def _transformer_parameters(c: Any) -> int:
    d, f = c.d_model, c.ffn_dim
    attention = 4 * d * d + 4 * d  # self: fused QKV + output; cross: Q + fused KV + output (same count)
    ffn = 2 * d * f + f + d
    norm = 2 * d  # LayerNorm weight and bias
    encoder = c.encoder_layers * (attention + ffn + 2 * norm)
    decoder = c.decoder_layers * (2 * attention + ffn + 3 * norm)
    tables = c.src_vocab_size * d
    tables += 0 if c.share_embeddings else c.tgt_vocab_size * d
    tables += 0 if c.tie_output else c.tgt_vocab_size * d
    stacks = 2 * norm if c.has_final_norm() else 0
    stacks += 2 * norm if c.embedding_norm else 0
    if c.positions == "learned":  # one table per stack; fixed tables are buffers
        stacks += 2 * (c.max_positions + c.position_offset) * d
    return encoder + decoder + tables + stacks


def _lstm_parameters(c: Any) -> int:
    e, h, layers = c.embed_dim, c.hidden_size, c.layers
    half = h // 2  # each encoder direction
    encoder = sum(2 * _lstm_cell(e if i == 0 else h, half) for i in range(layers))
    decoder = sum(_lstm_cell(e + h if i == 0 else h, h) for i in range(layers))
    bridges = 2 * (h * h + h)
    attention = {"bahdanau": 2 * h * h + 2 * h, "luong-general": h * h, "luong-dot": 0}[c.attention]
    combine = 2 * h * h
    tables = c.src_vocab_size * e + (0 if c.share_embeddings else c.tgt_vocab_size * e)
    output = (h * e if e != h else 0) if c.tie_output else c.tgt_vocab_size * h
    return encoder + decoder + bridges + attention + combine + tables + output


def _lstm_cell(inputs: int, hidden: int) -> int:
    """One LSTM layer (one direction): input and recurrent weights of 4 gates, two bias vectors."""
    return 4 * hidden * (inputs + hidden) + 8 * hidden
