"""The token-id step of prepare: every text shard tokenized once, one Ray task per shard.

Runs after the tokenizer is trained (or reused), and on its own for a dataset prepared before
token-id shards existed (`s2s prepare --tokenize-only --output DATA`). See
pipelines/token_ids.py for the format.
"""

from __future__ import annotations

from typing import TextIO

import ray

from pipelines import ray_runtime
from pipelines.datasets import SPLITS, staged_tokenizer
from pipelines.progress import Progress
from pipelines.storage import Storage
from pipelines.token_ids import text_shards, token_ids_entry, tokenize_shard
from s2s_core.tokenizer import Tokenizer

TASK_CPUS = 1.0


@ray.remote(num_cpus=TASK_CPUS)
def _tokenize_task(storage: Storage, data: str, manifest: dict, text_path: str) -> dict:
    return tokenize_shard(storage, data, manifest, text_path)


def run_tokenize_job(storage: Storage, data: str, manifest: dict, stream: TextIO | None = None) -> dict:
    """Write the id shards of every split; returns the manifest's `token_ids` section."""
    with staged_tokenizer(storage, data, manifest) as tokenizer_dir:
        vocab = (Tokenizer.from_dir(tokenizer_dir, "source").vocab_size,
                 Tokenizer.from_dir(tokenizer_dir, "target").vocab_size)
    jobs = [(split, path) for split in SPLITS for path in text_shards(manifest, split)]
    refs = [_tokenize_task.remote(storage, data, manifest, path) for _, path in jobs]
    progress = Progress("prepare: token ids", len(refs), stream)
    entries: dict[str, dict] = {}
    pending = list(refs)
    while pending:  # progress as shards finish; results are gathered in shard order below
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        progress.update(len(ready), shards=len(ready))
    progress.finish()
    for (split, _), entry in zip(jobs, ray_runtime.get(refs)):
        entries.setdefault(split, []).append(entry)
    return token_ids_entry(manifest, {split: entries.get(split, []) for split in SPLITS}, vocab)
