"""Orchestration: the nightly flow, deployments, `serve`, `submit` and `status`."""
