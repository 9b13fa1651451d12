"""Checkpoints that pass their own file index (files.json rewritten to match) but hold the wrong
thing: each is named with what is wrong, and a planted pickle never runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from s2s_core.errors import CheckpointError
from s2s_core.training.checkpoint import read_run_config, write_file_index
from s2s_core.training.trainer import Callbacks, fit
from tests.s2s_core.training.common import make_trainer, tiny_run


class Planted:
    """A pickle that would run a command if it were ever unpickled without restrictions."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(real_pairs, tokenizer, tokenizer_dir, tmp_path_factory):
    run = tiny_run(tokenizer.vocab_size, max_steps=2)
    trainer = make_trainer(real_pairs, run)
    fit(trainer, None, tokenizer, Callbacks())
    directory = tmp_path_factory.mktemp("ckpt") / "checkpoint-0000002"
    trainer.save(directory, run, tokenizer_dir)
    return run, directory


def planted_pickle(directory):
    Planted.marker = str(directory / "pwned")
    torch.save({"optimizer": Planted(), "scheduler": {}}, directory / "optimizer.pt")


def raw_pickle(directory):
    Planted.marker = str(directory / "pwned")
    (directory / "optimizer.pt").write_bytes(pickle.dumps({"optimizer": Planted()}))


@pytest.mark.parametrize("damage, message", [
    (planted_pickle, r"optimizer\.pt: is not a plain state dict \(Trying to load unsupported GLOBAL posix\.system"),
    (raw_pickle, r"optimizer\.pt: is not a plain state dict \("),
    (lambda d: torch.save([1, 2, 3], d / "optimizer.pt"),
     r"optimizer\.pt: does not hold the optimizer and scheduler states"),
    (lambda d: torch.save({"optimizer": {"state": {}}, "scheduler": {}}, d / "optimizer.pt"),
     r"optimizer\.pt: does not fit this run's optimizer \(KeyError"),
    (lambda d: (d / "optimizer.pt").write_bytes(b""), r"optimizer\.pt: cannot be read \(EOFError"),
    (lambda d: (d / "rng.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{}"),
     r"rng\.safetensors: cannot be restored as RNG states"),
    (lambda d: (d / "trainer_state.json").write_text("{\"step\": 2, \"bogus\": 1}"),
     r"trainer_state\.json: is not a trainer state \(.*bogus"),
    (lambda d: (d / "trainer_state.json").write_text("[2]"), r"trainer_state\.json: must hold a JSON object"),
])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the raw pickle
def test_a_consistent_but_wrong_checkpoint_is_named(trained, real_pairs, tmp_path, damage, message):
    run, directory = trained
    copy = shutil.copytree(directory, tmp_path / directory.name)
    damage(copy)
    write_file_index(copy)  # the checksums agree: only the content is wrong
    with pytest.raises(CheckpointError, match=message) as info:
        make_trainer(real_pairs, run).resume_from(copy)
    assert "\n" not in str(info.value)
    assert not (copy / "pwned").exists()


@pytest.mark.parametrize("index", [["model.safetensors"], {"model.safetensors": {"bytes": 1}}, {"x": "y"}])
def test_a_damaged_file_index_is_named(trained, real_pairs, tmp_path, index):
    run, directory = trained
    copy = shutil.copytree(directory, tmp_path / directory.name)
    (copy / "files.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"files\.json: (is not a file index of a checkpoint|must hold a JSON object)"):
        make_trainer(real_pairs, run).resume_from(copy)


def test_a_run_config_that_is_not_json_is_named(trained, tmp_path):
    _, directory = trained
    copy = shutil.copytree(directory, tmp_path / directory.name)
    (copy / "config.json").write_text("{not json")
    write_file_index(copy)
    with pytest.raises(CheckpointError, match=r"config\.json: is not valid JSON"):
        read_run_config(copy)
    assert json.loads((directory / "config.json").read_text())["max_steps"] == 2
