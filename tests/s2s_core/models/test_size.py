"""Size estimates from configs: exact against built models, and a package too large to load is
refused from its config alone, before anything is allocated."""

from __future__ import annotations

import json

import pytest

from s2s_core.errors import CheckpointError
from s2s_core.files import index_files
from s2s_core.models import build_model, model_config, num_parameters
from s2s_core.models.size import GB, estimate_bytes, estimate_parameters, search_bytes, size_problem
from s2s_core.package import load_package, save_package

VOCAB = {"src_vocab_size": 120, "tgt_vocab_size": 120}


@pytest.mark.parametrize("preset, options", [
    ("transformer-tiny", {}),
    ("transformer-small", {}),
    ("transformer-tiny", {"share_embeddings": False, "tie_output": False, "src_vocab_size": 90, "tgt_vocab_size": 70}),
    ("transformer-tiny", {"norm": "post", "activation": "gelu", "encoder_layers": 3, "decoder_layers": 1}),
    ("transformer-tiny", {"positions": "learned", "position_offset": 2, "embedding_norm": True,
                          "output_bias": True, "norm": "post", "final_norm": True}),
    ("lstm-tiny", {}),
    ("lstm-tiny", {"attention": "luong-general", "embed_dim": 32, "layers": 3}),
    ("lstm-tiny", {"attention": "luong-dot", "tie_output": False, "share_embeddings": False,
                   "src_vocab_size": 90, "tgt_vocab_size": 70}),
    ("lstm-tiny", {"embed_dim": 48, "layers": 2}),  # tied output through a hidden -> embedding projection
])
def test_the_estimate_is_the_parameter_count_of_the_built_model(preset, options):
    config = model_config(preset, {**VOCAB, **options})
    assert estimate_parameters(config) == num_parameters(build_model(config))


def test_presets_too_large_to_build_here_have_their_documented_size():
    # transformer-base: "about 44M + vocab params" (its docstring); shared and tied: one 8000 x 512 table.
    base = model_config("transformer-base", {"src_vocab_size": 8000, "tgt_vocab_size": 8000})
    assert estimate_parameters(base) - 8000 * 512 == pytest.approx(44e6, rel=0.01)
    assert estimate_bytes(base) == 4 * estimate_parameters(base)
    assert estimate_bytes(base, training=True) == 16 * estimate_parameters(base)


def test_a_huge_width_is_refused_with_the_estimate():
    config = model_config("transformer-tiny", {**VOCAB, "d_model": 1_000_000_000, "heads": 1, "ffn_dim": 8})
    problem = size_problem(config, 64 * GB)
    assert problem is not None and problem.startswith("a transformer of about 2.4e+19 parameters needs about 9.60e+10 GB ")
    assert problem.endswith("for its weights, more than the limit of 64.0 GB")
    assert "to train (weights, gradients, optimiser state)" in size_problem(config, 64 * GB, training=True)
    assert size_problem(model_config("transformer-tiny", VOCAB), 64 * GB) is None


def test_search_bytes_bound_the_rows_and_their_history():
    # 4 beams x 100 one-token sentences = 400 rows: 8 candidates of 12 bytes and at most a + b ids each.
    assert search_bytes(4, 100, 1.5, 10, 256) == 400 * (8 * 12 + 11.5 * 8)
    assert search_bytes(4, 100, 0.0, 1000, 256) == 400 * (8 * 12 + 256 * 8)  # max_length caps the history


@pytest.fixture
def tiny_package(tokenizer_dir, tmp_path):
    config = model_config("transformer-tiny", {"src_vocab_size": 1000, "tgt_vocab_size": 1000})
    save_package(tmp_path / "pkg", build_model(config), config, tokenizer_dir, {})
    return tmp_path / "pkg"


def rewrite_config(package, **changes) -> None:
    """Change config.json and re-index it in metadata.json, as a consistent but hostile package."""
    config = json.loads((package / "config.json").read_text())
    (package / "config.json").write_text(json.dumps({**config, **changes}))
    metadata = json.loads((package / "metadata.json").read_text())
    metadata["files"] = index_files(package, exclude="metadata.json")
    (package / "metadata.json").write_text(json.dumps(metadata))


def test_a_package_too_large_to_load_is_refused_before_building(tiny_package):
    rewrite_config(tiny_package, d_model=1_000_000_000, heads=1)
    with pytest.raises(CheckpointError, match=r"config\.json: a transformer of about 2\.4e\+19 parameters "
                                              r"needs about 9\.60e\+10 GB"):
        load_package(tiny_package)


def test_the_limit_is_the_callers(tiny_package):
    with pytest.raises(CheckpointError, match=r"more than the limit of 0.0001 GB"):
        load_package(tiny_package, max_bytes=100_000)
    assert load_package(tiny_package, max_bytes=10**9).config.d_model == 64
