"""What the importer refuses, each with one line naming the problem; what it accepts besides a
single safetensors file; what it records about the origin."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.importers import import_checkpoint
from s2s_core.package import load_package

from .conftest import Case


def copy_of(case: Case, tmp_path: Path) -> Path:
    target = tmp_path / "checkpoint"
    shutil.copytree(case.checkpoint, target)
    return target


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | changes))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("model_type, message", [
    ("t5", r"T5 checkpoints \(model_type t5\) are not supported.*supported: marian, m2m_100"),
    ("gpt2", r"unsupported model_type 'gpt2' \(supported: marian, m2m_100 \(M2M-100 and NLLB\), bart, mbart\)"),
])
def test_unsupported_model_types_are_named(marian_case, tmp_path, model_type, message):
    checkpoint = copy_of(marian_case, tmp_path)
    edit_json(checkpoint / "config.json", model_type=model_type)
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickled_weights_are_refused_unless_allowed(marian_case, tmp_path):
    checkpoint = copy_of(marian_case, tmp_path)
    tensors = safetensors.torch.load_file(checkpoint / "model.safetensors")
    torch.save(tensors, checkpoint / "pytorch_model.bin")
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model.bin\), refused by default"):
        import_checkpoint(checkpoint, tmp_path / "refused")
    import_checkpoint(checkpoint, tmp_path / "allowed", allow_pickle=True)
    assert same_weights(load_package(tmp_path / "allowed").model, marian_case.package.model)


def test_sharded_safetensors_import_as_one_file(nllb_case, tmp_path):
    checkpoint = copy_of(nllb_case, tmp_path)
    tensors = safetensors.torch.load_file(checkpoint / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, members in shards.items():
        safetensors.torch.save_file({name: tensors[name] for name in members}, checkpoint / shard)
    index = {"metadata": {}, "weight_map": {name: shard for shard, members in shards.items() for name in members}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    (checkpoint / "model.safetensors").unlink()
    languages = {"source_language": "eng_Latn", "target_language": "ita_Latn"}
    import_checkpoint(checkpoint, tmp_path / "sharded", **languages)
    assert same_weights(load_package(tmp_path / "sharded").model, nllb_case.package.model)
    (checkpoint / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002.safetensors: missing \(a shard named by"):
        import_checkpoint(checkpoint, tmp_path / "missing", **languages)


@pytest.mark.parametrize("case_name, removed, message", [
    ("marian", "target.spm", r"target.spm: missing \(a Marian tokenizer needs source.spm, target.spm and vocab.json\)"),
    ("nllb", "tokenizer.json", r"has no tokenizer files for m2m_100 \(expected tokenizer.json, or vocab.json and"),
    ("bart", "tokenizer.json", r"has no tokenizer files for bart \(expected tokenizer.json\)"),
])
def test_a_missing_tokenizer_file_is_named(request, tmp_path, case_name, removed, message):
    checkpoint = copy_of(request.getfixturevalue(f"{case_name}_case"), tmp_path)
    (checkpoint / removed).unlink()
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(checkpoint, tmp_path / "out", source_language="eng_Latn", target_language="ita_Latn")


def test_a_tokenizer_that_disagrees_with_the_model_is_refused(marian_case, tmp_path):
    checkpoint = copy_of(marian_case, tmp_path)
    edit_json(checkpoint / "config.json", eos_token_id=5)
    with pytest.raises(CheckpointError, match=r"tokenizer and model do not match: the tokenizer's </s> is 0 but "
                                              r"config.json's eos_token_id is 5"):
        import_checkpoint(checkpoint, tmp_path / "out")


def test_vocabulary_sizes_must_match_the_embedding_table(marian_case, tmp_path):
    checkpoint = copy_of(marian_case, tmp_path)
    rows = marian_case.hf_model.config.vocab_size
    edit_json(checkpoint / "config.json", vocab_size=rows + 1)
    with pytest.raises(CheckpointError, match=rf"vocab_size is {rows + 1} but the embedding table has {rows} rows"):
        import_checkpoint(checkpoint, tmp_path / "config")
    edit_json(checkpoint / "config.json", vocab_size=rows)
    edit_json(checkpoint / "vocab.json", extra_piece=rows + 4)
    with pytest.raises(CheckpointError, match=rf"the tokenizer has ids up to {rows + 4} but the embedding table has "
                                              rf"{rows} rows"):
        import_checkpoint(checkpoint, tmp_path / "tokenizer")


def test_features_we_cannot_express_are_named_together(bart_case, tmp_path):
    checkpoint = copy_of(bart_case, tmp_path)
    edit_json(checkpoint / "config.json", add_bias_logits=True, normalize_before=True, decoder_ffn_dim=48,
              activation_function="tanh")
    with pytest.raises(CheckpointError) as caught:
        import_checkpoint(checkpoint, tmp_path / "out")
    message = str(caught.value)
    assert "cannot import this bart checkpoint: encoder_ffn_dim (64) != decoder_ffn_dim (48); activation_function " \
           "'tanh' (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, swish, silu); normalize_before=true (a bart " \
           "checkpoint has false); add_bias_logits=true (a bart checkpoint has false)" in message
    assert "\n" not in message


def test_multilingual_checkpoints_need_known_languages(nllb_case, tmp_path):
    with pytest.raises(ConfigError, match=r"`source_language` is required to import a m2m_100 checkpoint"):
        import_checkpoint(nllb_case.checkpoint, tmp_path / "none", target_language="ita_Latn")
    with pytest.raises(ConfigError, match=r"`target_language`: the tokenizer has no language token 'xyz_Latn'"):
        import_checkpoint(nllb_case.checkpoint, tmp_path / "unknown", source_language="eng_Latn",
                          target_language="xyz_Latn")


def test_the_package_records_its_origin(nllb_case):
    origin = nllb_case.package.metadata["origin"]
    assert origin["family"] == "m2m_100" and origin["source"] == str(nllb_case.checkpoint.resolve())
    assert origin["languages"] == {"source": "eng_Latn", "target": "ita_Latn"}
    on_disk = sorted(p.name for p in nllb_case.checkpoint.iterdir())
    assert sorted(origin["files"]) == on_disk
    for name, entry in origin["files"].items():
        assert entry["sha256"] == hashlib.sha256((nllb_case.checkpoint / name).read_bytes()).hexdigest()
    assert nllb_case.package.metadata["decoding"]["limit_ending"] == "cut"  # no forced EOS in an M2M-100 config
