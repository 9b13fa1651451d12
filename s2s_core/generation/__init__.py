"""Decoding: token-level search over a model's incremental-state interface."""
