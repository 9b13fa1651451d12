"""Checkpoints and model packages: round trips, and damaged files named instead of torch tracebacks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from s2s_core.errors import CheckpointError
from s2s_core.models import build_model, model_config
from s2s_core.package import load_package, save_package
from s2s_core.training.trainer import Callbacks, fit
from tests.s2s_core.training.common import make_trainer, tiny_run


@pytest.fixture(scope="module")
def trained(real_pairs, tokenizer, tokenizer_dir, tmp_path_factory):
    run = tiny_run(tokenizer.vocab_size, max_steps=4)
    trainer = make_trainer(real_pairs, run)
    fit(trainer, None, tokenizer, Callbacks())
    directory = tmp_path_factory.mktemp("ckpt") / "checkpoint-0000004"
    trainer.save(directory, run, tokenizer_dir)
    return trainer, run, directory


def fresh_copy(directory, tmp_path):
    return shutil.copytree(directory, tmp_path / directory.name)


def test_checkpoint_holds_every_part(trained):
    _, run, directory = trained
    names = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert {"model.safetensors", "optimizer.pt", "rng.safetensors", "trainer_state.json", "config.json",
            "files.json", "tokenizer/spm.model", "metrics/train.jsonl"} <= names
    assert json.loads((directory / "config.json").read_text()) == run
    assert json.loads((directory / "trainer_state.json").read_text())["step"] == 4


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
     r"model\.safetensors: truncated or altered: 1000 bytes"),
    (lambda d: (d / "optimizer.pt").write_bytes(b"x" + (d / "optimizer.pt").read_bytes()[1:]),
     r"optimizer\.pt: corrupted: its SHA-256 does not match"),
    (lambda d: (d / "files.json").unlink(), r"incomplete checkpoint: files\.json is missing"),
    (lambda d: (d / "rng.safetensors").unlink(), r"rng\.safetensors: missing from the checkpoint"),
])
def test_damaged_checkpoints_are_named(trained, real_pairs, tmp_path, damage, message):
    trainer, run, directory = trained
    copy = fresh_copy(directory, tmp_path)
    damage(copy)
    with pytest.raises(CheckpointError, match=message) as info:
        make_trainer(real_pairs, run).resume_from(copy)
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_model_is_refused(trained, real_pairs, tokenizer, tmp_path):
    _, run, directory = trained
    other = make_trainer(real_pairs, tiny_run(tokenizer.vocab_size, preset="lstm-tiny"))
    with pytest.raises(CheckpointError, match="weights do not fit the model config"):
        other.resume_from(directory)


def test_package_round_trips(trained, tokenizer_dir, tmp_path):
    trainer, _, _ = trained
    config = model_config("transformer-tiny", trained[1]["model"])
    save_package(tmp_path / "pkg", trainer.module, config, tokenizer_dir, {"step": 4, "dataset_id": "abc"})
    package = load_package(tmp_path / "pkg")
    assert package.metadata["step"] == 4 and package.config == config and not package.model.training
    src, prev = torch.randint(4, 900, (2, 7)), torch.randint(4, 900, (2, 5))
    trainer.module.eval()
    torch.testing.assert_close(package.model(src, prev), trainer.module(src, prev), rtol=0, atol=0)
    assert package.target_tokenizer.vocab_size == config.tgt_vocab_size


def test_package_with_another_vocabulary_or_damage_is_refused(trained, tokenizer_dir, tmp_path):
    config = model_config("transformer-tiny", {"src_vocab_size": 500, "tgt_vocab_size": 500})
    save_package(tmp_path / "pkg", build_model(config), config, tokenizer_dir, {})
    with pytest.raises(CheckpointError, match=r"tokenizer vocabulary \(1000 source, 1000 target\) does not match "
                                              r"the model config \(500, 500\)"):
        load_package(tmp_path / "pkg")
    trainer, run, _ = trained
    good = model_config("transformer-tiny", run["model"])
    save_package(tmp_path / "ok", trainer.module, good, tokenizer_dir, {})
    weights = tmp_path / "ok" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated or altered"):
        load_package(tmp_path / "ok")
    (tmp_path / "ok" / "metadata.json").unlink()
    with pytest.raises(CheckpointError, match="missing: not a model package"):
        load_package(tmp_path / "ok")
