"""s2s_core.tokenizer: SentencePiece training on real pairs, encode/decode, special ids, determinism."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from pathlib import Path

import pytest
import sentencepiece as spm

from s2s_core.data.config import TokenizerConfig
from s2s_core.errors import InputError
from s2s_core.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SETTINGS_FILE,
    UNK_ID,
    Tokenizer,
    model_files,
    train_sentencepiece,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "en-it"
CONFIG = TokenizerConfig(vocab_size=500, threads=1)


def read_pairs(path: Path, limit: int) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 2 and fields[0].strip() and fields[1].strip():
            pairs.append((fields[0], fields[1]))
        if len(pairs) == limit:
            break
    return pairs


def is_normalised(text: str) -> bool:
    """Text SentencePiece's default nmt_nfkc normaliser leaves as it is."""
    return (text == unicodedata.normalize("NFKC", text) and text == " ".join(text.split())
            and text.isprintable())


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    out = read_pairs(SAMPLE / "train.tsv", 2000)
    assert len(out) == 2000
    return out


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    settings = train_sentencepiece(iter(pairs), out, CONFIG)  # any iterable, even a one-shot one
    assert settings["pairs"] == len(pairs)
    return out


@pytest.fixture(scope="module")
def tok(trained) -> Tokenizer:
    return Tokenizer.from_dir(trained)


def test_shared_training_writes_one_model_and_settings(trained, pairs):
    assert sorted(p.name for p in trained.iterdir()) == ["settings.json", "spm.model", "spm.vocab"]
    settings = json.loads((trained / SETTINGS_FILE).read_text())
    assert settings["files"] == {"source": "spm.model", "target": "spm.model"} == model_files(True)
    assert settings["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert settings["pairs"] == len(pairs)
    assert settings["config"] == dataclasses.asdict(CONFIG)
    assert Tokenizer.from_dir(trained, "target").path == Tokenizer.from_dir(trained, "source").path


def test_vocab_size_is_the_configured_one(tok):
    assert tok.vocab_size == CONFIG.vocab_size


def test_special_ids_in_the_model(trained, tok):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    sp = spm.SentencePieceProcessor(model_file=str(trained / "spm.model"))  # read the model directly
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert list(tok)[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert len(list(tok)) == tok.vocab_size


def test_model_does_not_record_the_training_path(trained):
    data = (trained / "spm.model").read_bytes()
    assert str(trained).encode() not in data
    assert str(trained.parent).encode() not in data


def test_round_trip_on_training_sentences(tok, pairs):
    sentences = [s for pair in pairs[:300] for s in pair if is_normalised(s)]
    assert len(sentences) > 400
    for text in sentences:
        ids = tok.encode(text)
        assert ids and all(4 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


def test_round_trip_on_held_out_sentences(tok, pairs):
    alphabet = {c for pair in pairs for s in pair for c in s}
    held_out = [s for pair in read_pairs(SAMPLE / "dev.tsv", 200) for s in pair
                if is_normalised(s) and set(s) <= alphabet]
    assert len(held_out) > 100
    for text in held_out:
        assert tok.decode(tok.encode(text)) == text


def test_encoding_compresses_text(tok, pairs):
    text = " ".join(s for s, _ in pairs[:50])
    assert len(tok.encode(text)) < len(text) / 2


def test_unknown_characters_map_to_unk(tok):
    ids = tok.encode("\u4e2d\u6587")  # Chinese characters are not in the en-it sample
    assert UNK_ID in ids


def test_add_bos_and_eos(tok):
    plain = tok.encode("Hello world")
    assert tok.encode("Hello world", add_bos=True) == [BOS_ID] + plain
    assert tok.encode("Hello world", add_eos=True) == plain + [EOS_ID]
    assert tok.encode("Hello world", add_bos=True, add_eos=True) == [BOS_ID] + plain + [EOS_ID]
    assert tok.encode("", add_bos=True, add_eos=True) == [BOS_ID, EOS_ID]
    assert tok.encode("") == []


def test_decode_drops_pad_bos_eos(tok):
    ids = tok.encode("The file was saved.")
    assert tok.decode([BOS_ID] + ids + [EOS_ID, PAD_ID, PAD_ID]) == "The file was saved."
    assert tok.decode([PAD_ID, BOS_ID, EOS_ID]) == ""


def test_encode_batch_equals_encode(tok, pairs):
    texts = [t for _, t in pairs[:64]] + ["", "Ciao"]
    for flags in ({}, {"add_bos": True}, {"add_eos": True}, {"add_bos": True, "add_eos": True}):
        assert tok.encode_batch(texts, **flags) == [tok.encode(t, **flags) for t in texts]


def test_pieces_concatenate_to_the_text(tok):
    pieces = tok.pieces("Open the file")
    assert "".join(pieces).replace("\u2581", " ").strip() == "Open the file"


def test_per_side_models(pairs, tmp_path):
    config = dataclasses.replace(CONFIG, shared=False, vocab_size=300)
    settings = train_sentencepiece(pairs[:1000], tmp_path, config)
    assert settings["files"] == {"source": "source.model", "target": "target.model"} == model_files(False)
    assert (tmp_path / "source.model").is_file() and (tmp_path / "target.model").is_file()
    assert not (tmp_path / "spm.model").exists()
    source, target = Tokenizer.from_dir(tmp_path, "source"), Tokenizer.from_dir(tmp_path, "target")
    assert source.path.name == "source.model" and target.path.name == "target.model"
    assert list(source) != list(target)  # each learnt its own language
    assert "\u2581the" in set(source) and "\u2581the" not in set(target)
    assert "\u2581di" in set(target)
    for sp in (source, target):
        assert list(sp)[:4] == ["<pad>", "<unk>", "<s>", "</s>"]


def test_bpe_model_type(pairs, tmp_path):
    train_sentencepiece(pairs[:500], tmp_path, dataclasses.replace(CONFIG, model_type="bpe", vocab_size=200))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString((tmp_path / "spm.model").read_bytes())
    assert proto.trainer_spec.model_type == pb.TrainerSpec.BPE
    assert sp.id_to_piece(3) == "</s>"


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_is_deterministic(pairs, tmp_path, model_type):
    # the default thread count (2): multi-threaded training must still give identical bytes
    config = dataclasses.replace(CONFIG, vocab_size=300, threads=TokenizerConfig().threads, model_type=model_type)
    train_sentencepiece(pairs[:1000], tmp_path / "one", config)
    train_sentencepiece(pairs[:1000], tmp_path / "deeper" / "two", config)
    for name in ("spm.model", SETTINGS_FILE):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "deeper" / "two" / name).read_bytes(), name


def test_different_data_gives_a_different_model(pairs, tmp_path):
    config = dataclasses.replace(CONFIG, vocab_size=300)
    train_sentencepiece(pairs[:1000], tmp_path / "a", config)
    train_sentencepiece(pairs[1000:2000], tmp_path / "b", config)
    assert (tmp_path / "a" / "spm.model").read_bytes() != (tmp_path / "b" / "spm.model").read_bytes()


def test_empty_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"no training pairs") as info:
        train_sentencepiece([], tmp_path / "tok", CONFIG)
    assert info.value.uri == str(tmp_path / "tok")
    assert not (tmp_path / "tok" / SETTINGS_FILE).exists()


def test_missing_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"tokenizer model not found"):
        Tokenizer(tmp_path / "nope.model")


def test_id_order_moves_an_imported_vocabularys_specials_to_ours():
    from s2s_core.tokenizer import IdOrder

    fairseq = IdOrder(size=8, pad=1, unk=3, bos=0, eos=2)  # BART, M2M-100, NLLB, mBART
    assert fairseq.origin_ids() == [1, 3, 0, 2, 4, 5, 6, 7]
    assert [fairseq.our_ids()[i] for i in fairseq.origin_ids()] == list(range(8))
    marian = IdOrder(size=6, pad=5, unk=1, bos=None, eos=0)  # no BOS: one is added, origin id 6
    assert marian.origin_ids() == [5, 1, 6, 0, 2, 3, 4]
    ours = marian.our_ids()
    assert (ours[5], ours[1], ours[6], ours[0]) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert sorted(ours) == list(range(7))


def test_settings_without_a_format_are_sentencepiece_and_unknown_formats_are_refused(trained, tmp_path):
    settings = json.loads((trained / SETTINGS_FILE).read_text())
    assert "format" not in settings  # what packages written before imported models hold
    assert Tokenizer.from_dir(trained).prefix == () and Tokenizer.from_dir(trained).suffix == (EOS_ID,)
    assert Tokenizer.from_dir(trained).row([7, 8]) == [7, 8, EOS_ID]
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(settings | {"format": "wordpiece"}))
    with pytest.raises(InputError, match=r"unknown tokenizer format 'wordpiece' \(known: sentencepiece, piece-map, "
                                         r"tokenizer.json\)"):
        Tokenizer.from_dir(tmp_path)
