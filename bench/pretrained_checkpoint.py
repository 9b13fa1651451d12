"""The benchmark checkpoint of bench/pretrained.py: an OPUS-MT-size Marian model with fixed random
weights and a SentencePiece vocabulary of real en-it text, saved as Hugging Face would, imported
with the library behind `s2s import`, and converted by CTranslate2's own TransformersConverter.
Built once into bench/out/pretrained-model and reused while its build settings are unchanged; the
package's own CTranslate2 exports (`s2s export`: oursct2-float32/, oursct2-int8/) are written
afresh at every run, so that they are always the current converter's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
MODEL_DIR = OUT / "pretrained-model"
DATA = Path("/work/shared/data/en-it")
VOCAB = 58_101  # OPUS-MT en-de's vocab_size
DIMS = {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
        "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "max_position_embeddings": 512}
SEED = 1
SPM_SENTENCES = 300_000  # texts sampled for SentencePiece (unigram reaches 58k pieces on them)
BEAMS = 4
BUILD = {"vocab": VOCAB, "dims": DIMS, "seed": SEED, "spm_sentences": SPM_SENTENCES, "version": 1}


# --- build: the checkpoint, its import and its CTranslate2 conversions ----------------------------


def build(workdir: Path) -> None:
    """hf/ (save_pretrained), package/ (import_checkpoint), ct2-float32/, ct2-int8/, build.json
    (the exports of package/ are `export_ours`'s)."""

    from transformers import MarianTokenizer

    files = workdir / "tokenizer"
    files.mkdir(parents=True, exist_ok=True)
    spm_model, pieces = train_spm(files / "spm")
    for name in ("source.spm", "target.spm"):
        shutil.copyfile(spm_model, files / name)
    (files / "vocab.json").write_text(json.dumps(marian_vocab(pieces), ensure_ascii=False))
    tokenizer = MarianTokenizer(str(files / "source.spm"), str(files / "target.spm"), str(files / "vocab.json"))
    model = marian_model(tokenizer)
    model.save_pretrained(workdir / "hf")
    tokenizer.save_pretrained(workdir / "hf")
    info = {"build": BUILD, "spm_pieces": len(pieces) + 3, "dummy_pieces": VOCAB - len(pieces) - 3,
            "hf_params": sum(p.numel() for p in model.parameters())}
    info |= import_and_convert(workdir)
    (workdir / "build.json").write_text(json.dumps(info, indent=2))


def train_spm(prefix: Path) -> tuple[Path, list[str]]:
    """A unigram SentencePiece model over both sides of train.tsv (a fixed sample), as many pieces
    as the text allows up to the vocabulary; returns its path and its pieces after unk/bos/eos."""
    import sentencepiece as spm

    texts = [text for line in (DATA / "train.tsv").read_text(encoding="utf-8").splitlines()
             for text in line.split("\t")[:2] if text.strip()]
    spm.set_random_generator_seed(SEED)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(prefix), model_type="unigram", vocab_size=VOCAB - 1,
        hard_vocab_limit=False, input_sentence_size=SPM_SENTENCES, shuffle_input_sentence=True, num_threads=2,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))
    return prefix.with_suffix(".model"), [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]


def marian_vocab(pieces: list[str]) -> dict[str, int]:
    """OPUS-MT's vocab.json layout: </s> 0, <unk> 1, the pieces, dummy pieces up to VOCAB - 1 rows,
    <pad> last (the decoder start)."""
    vocab = {"</s>": 0, "<unk>": 1} | {piece: i + 2 for i, piece in enumerate(pieces)}
    vocab |= {f"<dummy{i}>": len(vocab) + i for i in range(VOCAB - 1 - len(vocab))}
    vocab["<pad>"] = len(vocab)
    if len(vocab) != VOCAB:
        raise RuntimeError(f"vocab.json has {len(vocab)} entries, expected {VOCAB}")
    return vocab


def marian_model(tokenizer):
    """MarianMTModel with OPUS-MT en-de's config and generation config, seeded random weights."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = MarianConfig(vocab_size=VOCAB, **DIMS, activation_function="swish", scale_embedding=True,
                          dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, init_std=0.02,
                          pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
                          share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    torch.manual_seed(SEED)
    model = MarianMTModel(config).eval()
    generation = model.generation_config
    generation.num_beams, generation.max_length, generation.bad_words_ids = BEAMS, 512, [[pad]]
    return model


def import_and_convert(workdir: Path) -> dict:
    """`s2s import` -> package/, CTranslate2's converter -> ct2-*/."""

    from ctranslate2.converters import TransformersConverter

    from s2s_core.importers import import_checkpoint

    start = time.perf_counter()
    import_checkpoint(workdir / "hf", workdir / "package")
    info = {"import_s": time.perf_counter() - start}
    for quantization in ("float32", "int8"):
        TransformersConverter(str(workdir / "hf")).convert(
            str(workdir / f"ct2-{quantization}"), quantization=None if quantization == "float32" else quantization,
            force=True)
    return info


def export_ours(workdir: Path) -> None:
    """`s2s export` of package/ -> oursct2-float32/, oursct2-int8/ (the library call behind it);
    what it did ("exported", or its refusal) and how long it took -> exports.json."""
    from s2s_core.errors import S2SError
    from s2s_core.export.ct2 import export_ctranslate2
    from s2s_core.package import load_package

    info: dict = {"ours_export": "exported"}
    for quantization in ("float32", "int8"):
        target = workdir / f"oursct2-{quantization}"
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        try:
            export_ctranslate2(load_package(workdir / "package"), target, quantization)
        except S2SError as err:
            info["ours_export"] = " ".join(str(err).split())
            break
        info[f"export_{quantization}_s"] = time.perf_counter() - start
    (workdir / "exports.json").write_text(json.dumps(info, indent=2))


def ensure_built(rebuild: bool) -> dict:
    """The cached checkpoint of this BUILD (built in a child process: the parent stays lean)."""
    stamp = MODEL_DIR / "build.json"
    if rebuild or not stamp.exists() or json.loads(stamp.read_text()).get("build") != BUILD:
        import shutil

        shutil.rmtree(MODEL_DIR, ignore_errors=True)
        print(f"building the checkpoint in {MODEL_DIR} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(BENCH / "pretrained.py"), "--build-only"], check=True)
    print("exporting the package with `s2s export` (float32, int8) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(BENCH / "pretrained.py"), "--export-only"], check=True)
    return json.loads(stamp.read_text()) | json.loads((MODEL_DIR / "exports.json").read_text())
