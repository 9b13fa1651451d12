"""Shared fixtures for training tests: a small real tokenizer and tokenised real pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2s_core.data.config import TokenizerConfig
from s2s_core.tokenizer import Tokenizer, train_sentencepiece
from s2s_core.training.batching import TokenizedPairs
from tests.conftest import SAMPLE


def read_pairs(limit: int, path: Path = SAMPLE / "train.tsv") -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        source, target = line.split("\t")[:2]
        pairs.append((source, target))
    return pairs


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_sentencepiece(read_pairs(3000), directory, TokenizerConfig(vocab_size=1000))
    return directory


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_dir(tokenizer_dir)


@pytest.fixture(scope="session")
def real_pairs(tokenizer) -> TokenizedPairs:
    pairs = read_pairs(800)
    return TokenizedPairs.from_lists(tokenizer.encode_batch([s for s, _ in pairs]),
                                     tokenizer.encode_batch([t for _, t in pairs]))
