"""Scoring a model package on a prepared dataset's split, for the nightly promotion decision.

Both packages (the new one and the promoted one) are scored on the same pairs, with the same
decoding, by sacrebleu; a package trained on other data is judged on today's validation set.
"""

from __future__ import annotations

from pipelines.datasets import read_pairs, shard_uris
from pipelines.packages import open_text_layer
from pipelines.storage import Storage
from s2s_core.errors import InputError
from s2s_core.generation import GenerationConfig
from s2s_core.metrics import bleu_chrf

METRICS = ("bleu", "chrf")


def score_package(storage: Storage, model: str, data: str, manifest: dict, split: str, sentences: int,
                  config: GenerationConfig) -> dict:
    """{'bleu', 'chrf', 'sentences'} of `model` translating the first `sentences` pairs of `split`.

    Raises:
        InputError: the dataset has no such split.
    """
    uris = shard_uris(data, manifest, split)
    if not uris:
        raise InputError(data, f"has no {split} split to score models on")
    sources, references = read_pairs(storage, data, manifest, split, sentences)
    translator = open_text_layer(storage, model, "translate", config)
    hypotheses = [result.text for result in translator(sources)]
    return {**bleu_chrf(hypotheses, references, ndigits=3),
            "sentences": len(sources)}
