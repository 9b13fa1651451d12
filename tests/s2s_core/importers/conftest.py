"""Small Hugging Face checkpoints built here, once per session, from random weights and tokenizers
trained on the committed real slice data/sample/en-it (OPUS KDE4 en-it, see data/sample/README):
each saved in its family's own layout with `save_pretrained`, then imported as our package.

Random models are near uniform and never stop; the EOS logit gets a push (a logits-bias or
final-LayerNorm-bias term) so that some outputs end early and others reach the length limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from s2s_core.importers import import_checkpoint  # noqa: E402
from s2s_core.package import ModelPackage, load_package  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample" / "en-it"
LIMIT = 20
"""Most tokens generated before EOS in the generation parity tests."""
EDGE_CASES = [
    "", "   ", "Caffè, già più «perché» — naïve ½ € 5‰", "日本語のテキスト ☃ 🚀 ∑∫", "ALL CAPS!?;: (parentheses) [brackets]",
    "tab\tinside and  double  spaces", "Ünïcödé ÀÉÎÕÜ ß œ æ ø å", "x", "https://kde.org/~user?a=1&b=2", "1,234.56 100%",
]
"""Inputs real sentences rarely are: empty, whitespace, accents, characters no vocabulary here has."""


def read_pairs(name: str) -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines()]
    return [(row[0], row[1]) for row in rows if len(row) == 2]


@pytest.fixture(scope="session")
def train_pairs() -> list[tuple[str, str]]:
    return read_pairs("train.tsv")


@pytest.fixture(scope="session")
def token_sentences(train_pairs) -> list[str]:
    """500 texts for the token id checks: real sources and targets, then the edge cases."""
    real = [text for pair in read_pairs("dev.tsv")[:245] for text in pair]
    return real + EDGE_CASES


@pytest.fixture(scope="session")
def model_pairs() -> list[tuple[str, str]]:
    """Real held-out pairs short enough for the tiny models' position tables."""
    pairs = [(s, t) for s, t in read_pairs("test.tsv") if 0 < len(s) <= 160 and 0 < len(t) <= 160]
    assert len(pairs) >= 200
    return pairs[:200]


@pytest.fixture(scope="session")
def spm_model(train_pairs, tmp_path_factory) -> Path:
    """A 500-piece BPE SentencePiece model over both sides (BPE trains in well under a second); rare
    characters stay out of it (character_coverage < 1), so the tests meet unknown characters."""
    import sentencepiece as spm

    prefix = tmp_path_factory.mktemp("spm") / "spm"
    spm.set_random_generator_seed(1)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([text for pair in train_pairs for text in pair]), model_prefix=str(prefix),
        model_type="bpe", vocab_size=500, character_coverage=0.98, hard_vocab_limit=False, num_threads=1,
        minloglevel=2)
    return prefix.with_suffix(".model")


@dataclass
class Case:
    """One family's Hugging Face model and tokenizer, and our package imported from them."""

    family: str
    hf_model: Any
    hf_tokenizer: Any
    package: ModelPackage
    checkpoint: Path
    forced_eos: bool
    """The checkpoint's config forces EOS at the length limit (Marian, BART)."""
    suppress: list[int]
    """Origin ids ours never generates (PAD, BOS), banned in Hugging Face's generate too."""


def tiny_dims(vocab_size: int, **extra: Any) -> dict[str, Any]:
    """A 2+2-layer, d_model 32 config; large initial weights make the model's choices clear-cut,
    so that float rounding cannot swap the best candidates."""
    return dict(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                init_std=0.3, dropout=0.0, **extra)


def push_eos_through_norm(model: Any, eos: int, amount: float) -> None:
    """Raise the EOS logit by about `amount` through the decoder's final LayerNorm bias (for
    families without a logits bias): the output projection is the embedding table."""
    with torch.no_grad():
        row = model.get_output_embeddings().weight[eos]
        model.model.decoder.layer_norm.bias.copy_(amount * row / row.dot(row))


def save_and_import(root: Path, family: str, model: Any, tokenizer: Any, **languages: str) -> tuple[Path, ModelPackage]:
    checkpoint, package = root / f"hf-{family}", root / f"pkg-{family}"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    import_checkpoint(checkpoint, package, **languages)
    return checkpoint, load_package(package)


def build_marian(root: Path, spm_model: Path) -> Case:
    """OPUS-MT layout: source.spm, target.spm and a vocab.json numbering their pieces (EOS 0, unk 1,
    PAD last, no BOS), as Marian's converter writes them."""
    import json
    import shutil

    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1} | {piece: i + 2 for i, piece in enumerate(pieces)}
    vocab["<pad>"] = len(vocab)
    files = root / "marian-files"
    files.mkdir()
    for name in ("source.spm", "target.spm"):
        shutil.copyfile(spm_model, files / name)
    (files / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(str(files / "source.spm"), str(files / "target.spm"), str(files / "vocab.json"))
    pad, eos = vocab["<pad>"], vocab["</s>"]
    torch.manual_seed(0)
    config = MarianConfig(**tiny_dims(len(vocab), pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad,
                                      forced_eos_token_id=eos, scale_embedding=True, activation_function="swish"))
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
        model.final_logits_bias[0, eos] = 4.5
    checkpoint, package = save_and_import(root, "marian", model, tokenizer)
    return Case("marian", model, tokenizer, package, checkpoint, True, [pad])


def build_nllb(root: Path, spm_model: Path) -> Case:
    """NLLB layout: tokenizer.json (fairseq ids: <s> 0, <pad> 1, </s> 2, <unk> 3, pieces, language
    codes, <mask>), a pre-norm M2M-100 model with fairseq's sinusoidal positions."""
    import shutil

    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    files = root / "nllb-files"
    files.mkdir()
    shutil.copyfile(spm_model, files / "sentencepiece.bpe.model")
    tokenizer = NllbTokenizer.from_pretrained(files, src_lang="eng_Latn", tgt_lang="ita_Latn",
                                              extra_special_tokens=list(FAIRSEQ_LANGUAGE_CODES))
    torch.manual_seed(1)
    model = M2M100ForConditionalGeneration(M2M100Config(**tiny_dims(len(tokenizer), scale_embedding=True))).eval()
    push_eos_through_norm(model, tokenizer.eos_token_id, 6.0)
    checkpoint, package = save_and_import(root, "nllb", model, tokenizer, source_language="eng_Latn",
                                          target_language="ita_Latn")
    return Case("nllb", model, tokenizer, package, checkpoint, False, [tokenizer.pad_token_id, tokenizer.bos_token_id])


def build_bart(root: Path, train_pairs: list[tuple[str, str]]) -> Case:
    """BART layout: a byte-level BPE tokenizer.json (RoBERTa's), a post-norm model with learned
    positions, an embedding LayerNorm and a logits bias; generation forces <s> first, as
    facebook/bart-large's config does."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([text for pair in train_pairs for text in pair], vocab_size=600, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    model_data = bpe._tokenizer.model  # the trained BPE's vocab and merges, as RoBERTa's tokenizer takes them
    files = root / "bart-bpe"
    files.mkdir()
    vocab_file, merges_file = model_data.save(str(files))
    tokenizer = BartTokenizer(vocab=vocab_file, merges=merges_file)
    torch.manual_seed(2)
    model = BartForConditionalGeneration(BartConfig(**tiny_dims(len(tokenizer)))).eval()
    model.generation_config.forced_bos_token_id = tokenizer.bos_token_id
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
        model.final_logits_bias[0, tokenizer.eos_token_id] = 6.5
    checkpoint, package = save_and_import(root, "bart", model, tokenizer)
    return Case("bart", model, tokenizer, package, checkpoint, True, [tokenizer.pad_token_id, tokenizer.bos_token_id])


def build_m2m100(root: Path, spm_model: Path) -> Case:
    """M2M-100 layout: sentencepiece.bpe.model and a vocab.json of fairseq ids; the language tokens
    `__xx__` follow the pieces, and the embedding table has spare rows after them (M2M-100's
    "made-up words")."""
    import json
    import shutil

    import sentencepiece as spm
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab |= {sp.id_to_piece(i): i + 1 for i in range(3, sp.get_piece_size())}
    files = root / "m2m100-files"
    files.mkdir()
    shutil.copyfile(spm_model, files / "sentencepiece.bpe.model")
    (files / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = M2M100Tokenizer(str(files / "vocab.json"), str(files / "sentencepiece.bpe.model"), src_lang="en",
                                tgt_lang="it")
    torch.manual_seed(3)
    model = M2M100ForConditionalGeneration(M2M100Config(**tiny_dims(max(tokenizer.lang_token_to_id.values()) + 1 + 8, scale_embedding=True)))
    push_eos_through_norm(model.eval(), tokenizer.eos_token_id, 6.0)
    checkpoint, package = save_and_import(root, "m2m100", model, tokenizer, source_language="en",
                                          target_language="it")
    return Case("m2m100", model, tokenizer, package, checkpoint, False,
                [tokenizer.pad_token_id, tokenizer.bos_token_id])


def build_mbart(root: Path, spm_model: Path, fifty: bool = True) -> Case:
    """mBART layout: tokenizer.json with language codes (`it_IT`): mBART-50's start source and target
    rows, the decoder starts from EOS and generation forces the target code first; mBART-25's end
    rows after EOS, and the decoder starts from the target code. A pre-norm model with learned
    positions, embedding and final LayerNorms, a logits bias."""
    import shutil

    from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration, MBartTokenizer
    from transformers.models.mbart50.tokenization_mbart50 import FAIRSEQ_LANGUAGE_CODES

    files = root / "mbart-files"
    files.mkdir()
    shutil.copyfile(spm_model, files / "sentencepiece.bpe.model")
    kind = MBart50Tokenizer if fifty else MBartTokenizer
    (files / "tokenizer_config.json").write_text(f'{{"tokenizer_class": "{kind.__name__}"}}')
    tokenizer = kind.from_pretrained(files, src_lang="en_XX", tgt_lang="it_IT",
                                     extra_special_tokens=list(FAIRSEQ_LANGUAGE_CODES))
    torch.manual_seed(4)
    start = tokenizer.eos_token_id if fifty else tokenizer.convert_tokens_to_ids("it_IT")
    config = MBartConfig(**tiny_dims(len(tokenizer), decoder_start_token_id=start, scale_embedding=True))
    model = MBartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
        model.final_logits_bias[0, tokenizer.eos_token_id] = MBART_EOS_BIAS
    checkpoint, package = save_and_import(root, "mbart", model, tokenizer, source_language="en_XX",
                                          target_language="it_IT")
    return Case("mbart", model, tokenizer, package, checkpoint, True,
                [tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<s>")])


MBART_EOS_BIAS = 3.5


@pytest.fixture(scope="session")
def marian_case(tmp_path_factory, spm_model) -> Case:
    return build_marian(tmp_path_factory.mktemp("marian"), spm_model)


@pytest.fixture(scope="session")
def nllb_case(tmp_path_factory, spm_model) -> Case:
    return build_nllb(tmp_path_factory.mktemp("nllb"), spm_model)


@pytest.fixture(scope="session")
def m2m100_case(tmp_path_factory, spm_model) -> Case:
    return build_m2m100(tmp_path_factory.mktemp("m2m100"), spm_model)


@pytest.fixture(scope="session")
def bart_case(tmp_path_factory, train_pairs) -> Case:
    return build_bart(tmp_path_factory.mktemp("bart"), train_pairs)


@pytest.fixture(scope="session")
def mbart_case(tmp_path_factory, spm_model) -> Case:
    return build_mbart(tmp_path_factory.mktemp("mbart"), spm_model)


@pytest.fixture(scope="session")
def mbart25_case(tmp_path_factory, spm_model) -> Case:
    return build_mbart(tmp_path_factory.mktemp("mbart25"), spm_model, fifty=False)


@pytest.fixture(scope="session", params=["marian", "nllb", "m2m100", "bart", "mbart", "mbart25"])
def case(request) -> Case:
    """Each family in turn (each built once per session, shared with the tests that name it)."""
    return request.getfixturevalue(f"{request.param}_case")
