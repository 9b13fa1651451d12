"""The `train` stage: Ray Train workers around `s2s_core.training`, launched by a Prefect flow."""
