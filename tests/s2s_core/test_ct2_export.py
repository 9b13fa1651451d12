"""The CTranslate2 converter: for every architecture option our Transformer has, CTranslate2's
log-probabilities of real target sentences (`score_batch`) equal our model's teacher-forced ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.export.ct2 import EXPORT_INFO, check_export, export_ctranslate2, vocabulary
from s2s_core.models import build_model, model_config
from s2s_core.package import load_package, save_package
from s2s_core.tokenizer import BOS_ID, EOS_ID, Tokenizer
from tests.s2s_core.conftest import read_pairs

ctranslate2 = pytest.importorskip("ctranslate2")

ARCHITECTURES = {
    "pre-norm, shared and tied": {},
    "post-norm, gelu, separate tables, untied, unscaled": {
        "norm": "post", "activation": "gelu", "share_embeddings": False, "tie_output": False,
        "scale_embeddings": False},
    "4+1 layers, 8 heads": {"encoder_layers": 4, "decoder_layers": 1, "heads": 8, "max_positions": 128},
}


def make_package(root: Path, tokenizer_dir: Path, overrides: dict, seed: int = 0) -> Path:
    vocab = Tokenizer.from_dir(tokenizer_dir).vocab_size
    config = model_config("transformer-tiny", {"src_vocab_size": vocab, "tgt_vocab_size": vocab, **overrides})
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():  # random LayerNorm parameters, so a misplaced norm cannot go unnoticed
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    save_package(root, model, config, tokenizer_dir, {"note": "random weights"})
    return root


def torch_log_probs(package, source: list[int], target: list[int]) -> torch.Tensor:
    """Teacher-forced log P of target + EOS given source + EOS: (len(target) + 1,)."""
    src = torch.tensor([source + [EOS_ID]])
    prev = torch.tensor([[BOS_ID] + target])
    with torch.no_grad():
        logits = package.model(src, prev)[0]
    gold = torch.tensor(target + [EOS_ID])
    return torch.log_softmax(logits, dim=-1).gather(1, gold[:, None])[:, 0]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_ctranslate2_scores_equal_ours_for_every_architecture(name, tokenizer_dir, tmp_path):
    package = load_package(make_package(tmp_path / "pkg", tokenizer_dir, ARCHITECTURES[name]))
    info = export_ctranslate2(package, tmp_path / "ct2")
    assert info["quantization"] == "float32" and info["weights_sha256"]
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
    source_vocab, target_vocab = vocabulary(package.source_tokenizer), vocabulary(package.target_tokenizer)
    pairs = read_pairs(12)
    sources = [package.source_tokenizer.encode(s) for s, _ in pairs]
    targets = [package.target_tokenizer.encode(t) for _, t in pairs]
    results = translator.score_batch([[source_vocab[i] for i in s] + ["</s>"] for s in sources],
                                     [[target_vocab[i] for i in t] for t in targets])
    for source, target, result in zip(sources, targets, results):
        ours = torch_log_probs(package, source, target)
        theirs = torch.tensor(result.log_probs)
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, atol=2e-4, rtol=1e-4)


def test_int8_export_stays_close_and_is_smaller(tokenizer_dir, tmp_path):
    package = load_package(make_package(tmp_path / "pkg", tokenizer_dir, {}))
    export_ctranslate2(package, tmp_path / "f32")
    export_ctranslate2(package, tmp_path / "int8", quantization="int8")
    assert (tmp_path / "int8/model.bin").stat().st_size < 0.6 * (tmp_path / "f32/model.bin").stat().st_size
    assert json.loads((tmp_path / "int8" / EXPORT_INFO).read_text())["quantization"] == "int8"


def test_an_export_of_another_package_is_refused(tokenizer_dir, tmp_path):
    one = load_package(make_package(tmp_path / "one", tokenizer_dir, {}, seed=0))
    other = load_package(make_package(tmp_path / "other", tokenizer_dir, {}, seed=1))
    export_ctranslate2(other, tmp_path / "ct2")
    assert check_export(other, tmp_path / "ct2")["quantization"] == "float32"
    with pytest.raises(CheckpointError, match="exported from another package.*s2s export --model"):
        check_export(one, tmp_path / "ct2")
    (tmp_path / "ct2/model.bin").unlink()
    with pytest.raises(CheckpointError, match="incomplete CTranslate2 export"):
        check_export(other, tmp_path / "ct2")


def test_lstm_and_unknown_quantizations_are_refused_in_one_line(tokenizer_dir, tmp_path):
    vocab = Tokenizer.from_dir(tokenizer_dir).vocab_size
    config = model_config("lstm-tiny", {"src_vocab_size": vocab, "tgt_vocab_size": vocab})
    save_package(tmp_path / "lstm", build_model(config), config, tokenizer_dir, {})
    with pytest.raises(ConfigError, match="CTranslate2 has no LSTM models") as err:
        export_ctranslate2(load_package(tmp_path / "lstm"), tmp_path / "out")
    assert "\n" not in str(err.value)
    transformer = load_package(make_package(tmp_path / "pkg", tokenizer_dir, {}))
    with pytest.raises(ConfigError, match="unknown quantization 'int4'"):
        export_ctranslate2(transformer, tmp_path / "out", quantization="int4")
    assert not (tmp_path / "out").exists()
    shutil.rmtree(tmp_path / "lstm")
