"""Scoring a model package on a prepared dataset's split, for the nightly promotion decision.

Both packages (the new one and the promoted one) are scored on the same pairs, with the same
decoding, by sacrebleu; a package trained on other data is judged on today's validation set.
"""

from __future__ import annotations

import sacrebleu

from pipelines.generate.worker import local_package
from pipelines.storage import Storage
from pipelines.train.data import read_texts, shard_uris
from s2s_core.errors import InputError
from s2s_core.generation import GenerationConfig, Translator

METRICS = ("bleu", "chrf")


def score_package(storage: Storage, model: str, data: str, manifest: dict, split: str, sentences: int,
                  config: GenerationConfig) -> dict:
    """{'bleu', 'chrf', 'sentences'} of `model` translating the first `sentences` pairs of `split`.

    Raises:
        InputError: the dataset has no such split.
    """
    from s2s_core.package import load_package

    uris = shard_uris(data, manifest, split)
    if not uris:
        raise InputError(data, f"has no {split} split to score models on")
    sources, references = read_texts(storage, uris, sentences)
    translator = Translator(load_package(local_package(storage, model)), config)
    hypotheses = [result.text for result in translator(sources)]
    return {"bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 3),
            "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 3),
            "sentences": len(sources)}
