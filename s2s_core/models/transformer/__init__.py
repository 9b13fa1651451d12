"""The Transformer family (`family: transformer`)."""

from __future__ import annotations

from s2s_core.models.transformer.model import TransformerDecoderState, TransformerModel

__all__ = ["TransformerDecoderState", "TransformerModel"]
