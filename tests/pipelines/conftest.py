"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines import cli
from s2s_core.data.config import TokenizerConfig
from s2s_core.models import build_model, model_config
from s2s_core.package import save_package
from s2s_core.tokenizer import Tokenizer, train_sentencepiece
from tests.conftest import SAMPLE


def sample_pairs(name: str) -> list[tuple[str, str]]:
    """The committed real en-it slice `name` (train, dev, test) as (source, target) pairs."""
    lines = (SAMPLE / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")[:2]) for line in lines]  # type: ignore[misc]


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A transformer-tiny package with fixed random weights and a 1,000-piece tokenizer trained
    on the committed sample: what the bulk job's guarantees need, not translation quality."""
    root = tmp_path_factory.mktemp("tiny-package")
    train_sentencepiece(sample_pairs("train"), root / "tokenizer", TokenizerConfig(vocab_size=1000))
    vocab = Tokenizer.from_dir(root / "tokenizer").vocab_size
    config = model_config("transformer-tiny", {"src_vocab_size": vocab, "tgt_vocab_size": vocab})
    torch.manual_seed(0)
    save_package(root / "model", build_model(config), config, root / "tokenizer", {"note": "random weights"})
    return root / "model"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, ray_local, prefect_api) -> Path:
    """The committed real slice, prepared with a 1,000-piece tokenizer."""
    out = tmp_path_factory.mktemp("train-data") / "dataset"
    code = cli.main(["prepare", "--input", str(SAMPLE / "train.tsv"), "--valid", str(SAMPLE / "dev.tsv"),
                     "--output", str(out), "tokenizer.vocab_size=1000", "split.test_rows=0"])
    assert code == 0
    return out


# transformer-tiny on small real batches: ~0.1 s a step on 2 CPUs. Dropout stays on (0.1):
# it is seeded per global micro-batch, so every comparison of two runs holds with it.
TINY = ["preset=transformer-tiny", "seed=5", "log_every=1", "optim.lr=2e-3", "schedule.warmup_steps=10",
        "batching.max_tokens=1200", "validation.every_steps=0", "checkpoint.every_steps=10"]


@pytest.fixture(scope="session")
def two_workers(dataset, tmp_path_factory) -> Path:
    """The reference run of `dataset`: 2 DDP workers, 20 steps of TINY, checkpoints at 10 and 20.
    Shared by the session (one Ray Train run fewer): read it, or change a copy."""
    output = tmp_path_factory.mktemp("two-workers") / "run"
    assert cli.main(["train", "--data", str(dataset), "--output", str(output), "--workers", "2", *TINY,
                     "max_steps=20"]) == 0
    return output


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    """The importer tests' 500-piece SentencePiece model (tests/s2s_core/importers/conftest.py)."""
    from tests.s2s_core.importers import conftest

    return conftest.spm_model.__wrapped__(conftest.train_pairs.__wrapped__(), tmp_path_factory)


@pytest.fixture(scope="session")
def marian_checkpoint(tmp_path_factory, spm_model) -> Path:
    """A tiny Hugging Face Marian checkpoint (random weights, a real tokenizer) built locally."""
    pytest.importorskip("transformers")
    from tests.s2s_core.importers.conftest import build_marian

    return build_marian(tmp_path_factory.mktemp("marian"), spm_model).checkpoint
