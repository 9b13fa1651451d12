"""The attentional LSTM family (`family: lstm`)."""

from __future__ import annotations

from s2s_core.models.lstm.model import LSTMDecoderState, LSTMEncoderOutput, LSTMModel

__all__ = ["LSTMDecoderState", "LSTMEncoderOutput", "LSTMModel"]
