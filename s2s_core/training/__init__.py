"""Training: batching, loss, schedules, checkpoints and the training loop (no Ray, no I/O beyond local files)."""
