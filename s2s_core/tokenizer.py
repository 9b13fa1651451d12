"""SentencePiece: training on a sample of sentences, and a small wrapper used by every stage.

Special ids are fixed for every model we train: pad=0, unk=1, bos=2, eos=3, so model
configs and batches never need to look them up.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_model

from s2s_core.data.config import TokenizerConfig
from s2s_core.errors import InputError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SETTINGS_FILE = "settings.json"


def model_files(shared: bool) -> dict[str, str]:
    """Model file per side: one shared model, or one per side."""
    if shared:
        return {"source": "spm.model", "target": "spm.model"}
    return {"source": "source.model", "target": "target.model"}


def train_sentencepiece(pairs: Iterable[tuple[str, str]], out_dir: Path, config: TokenizerConfig) -> dict:
    """Train the model(s) for `config` on (source, target) pairs; write them and settings.json.

    Returns the settings written (config, sentences used per model). Raises InputError if
    there is no text to train on.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = list(pairs)
    if not pairs:
        raise InputError(str(out_dir), "no training pairs to train the tokenizer on")
    if config.shared:
        corpora = {"spm": [s for pair in pairs for s in pair]}
    else:
        corpora = {"source": [s for s, _ in pairs], "target": [t for _, t in pairs]}
    for prefix, sentences in corpora.items():
        _train_one(sentences, out_dir / prefix, config)
    settings = {"config": asdict(config), "pairs": len(pairs), "files": model_files(config.shared),
                "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}}
    (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return settings


def _train_one(sentences: list[str], prefix: Path, config: TokenizerConfig) -> None:
    # SentencePiece seeds its sampler afresh each run unless told: fix it for reproducible models.
    spm.set_random_generator_seed(config.seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(prefix),
        model_type=config.model_type,
        vocab_size=config.vocab_size,
        hard_vocab_limit=False,  # a small corpus gets a smaller vocabulary instead of an error
        character_coverage=config.character_coverage,
        input_sentence_size=len(sentences),
        shuffle_input_sentence=False,  # the sample is already in hash order: deterministic
        max_sentence_length=config.max_sentence_chars * 4,  # SentencePiece counts bytes
        byte_fallback=config.byte_fallback,
        num_threads=config.threads,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        minloglevel=2,
    )
    _drop_training_path(prefix.with_suffix(".model"))


def _drop_training_path(model_file: Path) -> None:
    """The model records the (temporary) path it was trained to; keep only the file stem so
    the same data and settings give the same bytes wherever training ran."""
    proto = sp_model.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    proto.trainer_spec.model_prefix = model_file.stem
    model_file.write_bytes(proto.SerializeToString())


class Tokenizer:
    """Encode/decode one side with a trained SentencePiece model."""

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise InputError(str(self.path), "tokenizer model not found")
        self._sp = spm.SentencePieceProcessor(model_file=str(self.path))

    @classmethod
    def from_dir(cls, directory: str | Path, side: str = "source") -> "Tokenizer":
        """The tokenizer of `side` ('source' or 'target') in a `tokenizer/` directory."""
        settings = json.loads((Path(directory) / SETTINGS_FILE).read_text())
        return cls(Path(directory) / settings["files"][side])

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of one string, optionally wrapped in BOS/EOS."""
        return self._sp.encode(text, add_bos=add_bos, add_eos=add_eos)

    def encode_batch(self, texts: list[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        """Token ids of many strings (SentencePiece encodes them in one native call)."""
        return self._sp.encode(texts, add_bos=add_bos, add_eos=add_eos)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; pad/bos/eos are dropped."""
        return self._sp.decode([i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def __iter__(self) -> Iterator[str]:
        return (self._sp.id_to_piece(i) for i in range(self.vocab_size))
