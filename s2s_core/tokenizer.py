"""SentencePiece: training on a sample of sentences, and the one `Tokenizer` interface every stage uses.

Special ids are fixed for every model we train: pad=0, unk=1, bos=2, eos=3, so model
configs and batches never need to look them up. Imported models keep that rule: their
vocabulary is reordered (`IdOrder`) so that their own pad, unk, bos and eos become 0-3.

A `tokenizer/` directory holds the model file(s) and settings.json; its `format` says which
`Tokenizer` reads it (absent: ours, SentencePiece):
- sentencepiece: `files` names the SentencePiece model of each side;
- piece-map (imported Marian, M2M-100): per side in `sides`, a SentencePiece model that splits
  text into pieces and a JSON piece -> id map that numbers them (unknown pieces are unk);
- tokenizer.json (imported BART, mBART, NLLB): per side a Hugging Face `tokenizers` file.
Imported sides also list their special ids, vocabulary size and the tokens a model row of that
side starts and ends with (`prefix`, `suffix`: a language code, EOS).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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
    proto = sp_model.ModelProto()  # type: ignore[attr-defined]  # generated protobuf module: no stubs
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
        kind = settings.get("format", "sentencepiece")
        if kind == "sentencepiece":
            return cls(Path(directory) / settings["files"][side])
        if kind not in IMPORTED_FORMATS:
            raise InputError(str(Path(directory) / SETTINGS_FILE), f"unknown tokenizer format {kind!r} (known: "
                                                                   f"sentencepiece, {', '.join(IMPORTED_FORMATS)})")
        return ImportedTokenizer(Path(directory), settings["sides"][side], IMPORTED_FORMATS[kind],
                                 languages=settings.get("languages"), origin=settings.get("origin"))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
    prefix: tuple[int, ...] = ()
    """Ids a model row of this side starts with: a source language code; on the target side, the
    tokens generation forces first (a target language code)."""
    suffix: tuple[int, ...] = (EOS_ID,)
    """Ids a model row of this side ends with."""
    languages: dict[str, Any] | None = None
    """An imported multilingual model's settings.json `languages` (layout, code -> token, the
    defaults): `s2s_core.generation.languages` chooses the languages of each row with it."""
    origin: str | None = None
    """The family an imported tokenizer came from (marian, m2m_100, bart, mbart); None: ours."""

    def row(self, ids: Sequence[int]) -> list[int]:
        """A model row of encoded text: `prefix + ids + suffix`."""
        return [*self.prefix, *ids, *self.suffix]

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


@dataclass(frozen=True)
class IdOrder:
    """Our ids of an imported vocabulary of `size` ids: its pad, unk, bos and eos move to 0-3, every
    other id follows in its own order. A vocabulary without BOS (Marian) gets one added: our id 2,
    origin id `size` (a row the importer adds to the model)."""

    size: int
    pad: int
    unk: int
    bos: int | None
    eos: int

    def origin_ids(self) -> list[int]:
        """Origin id of each of our ids (the added BOS: `size`); `size` (+1 without BOS) long."""
        specials = [self.pad, self.unk, self.size if self.bos is None else self.bos, self.eos]
        taken = set(specials)
        return specials + [i for i in range(self.size) if i not in taken]

    def our_ids(self) -> list[int]:
        """Our id of each origin id (index `size`: the added BOS, if any)."""
        out = [0] * (self.size + (self.bos is None))
        for ours, origin in enumerate(self.origin_ids()):
            out[origin] = ours
        return out

    @classmethod
    def of(cls, side: dict[str, Any]) -> "IdOrder":
        ids = side["special_ids"]
        return cls(size=side["vocab_size"], pad=ids["pad"], unk=ids["unk"], bos=ids.get("bos"), eos=ids["eos"])


class _PieceMap:
    """Text -> origin ids through a SentencePiece model's pieces and a piece -> id map, as Hugging
    Face's Marian and M2M-100 tokenizers do (a piece missing from the map is unk); with
    `language_code_prefix`, a leading `>>xx<<` is a token of its own (Marian's multilingual targets)."""

    def __init__(self, directory: Path, side: dict[str, Any]) -> None:
        self._sp = spm.SentencePieceProcessor(model_file=str(directory / side["model"]))
        self.ids: dict[str, int] = json.loads((directory / side["vocab"]).read_text(encoding="utf-8"))
        self.tokens = {i: piece for piece, i in self.ids.items()}
        self.unk = side["special_ids"]["unk"]
        self.code_prefix = bool(side.get("language_code_prefix", False))

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = []
        for text in texts:
            code = []
            if self.code_prefix and text.startswith(">>") and (end := text.find("<<")) != -1:
                code, text = [text[: end + 2]], text[end + 2:]
            pieces = code + self._sp.encode(text, out_type=str)
            out.append([self.ids.get(piece, self.unk) for piece in pieces])
        return out

    def decode(self, ids: list[int], skip: set[int]) -> str:
        # Stripped, as Hugging Face's Marian and M2M-100 tokenizers do (a dropped unk can leave a lone "▁").
        return self._sp.decode_pieces([self.tokens[i] for i in ids if i not in skip and i in self.tokens]).strip()

    def token(self, origin_id: int) -> str | None:
        return self.tokens.get(origin_id)

    def token_id(self, token: str) -> int | None:
        return self.ids.get(token)


class _JsonTokenizer:
    """Text -> origin ids with a Hugging Face `tokenizers` file (tokenizer.json), without its own
    special-token template (ours adds `prefix`/`suffix`)."""

    def __init__(self, directory: Path, side: dict[str, Any]) -> None:
        from tokenizers import Tokenizer as HFTokenizer  # a regular dependency, loaded when used

        self._tok = HFTokenizer.from_file(str(directory / side["model"]))

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip: set[int]) -> str:
        return self._tok.decode([i for i in ids if i not in skip], skip_special_tokens=True)

    def token(self, origin_id: int) -> str | None:
        return self._tok.id_to_token(origin_id)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


IMPORTED_FORMATS: dict[str, type[_PieceMap] | type[_JsonTokenizer]] = {
    "piece-map": _PieceMap,
    "tokenizer.json": _JsonTokenizer,
}
"""Readers of imported tokenizer directories by settings.json `format`."""


class ImportedTokenizer(Tokenizer):
    """One side of an imported model's tokenizer, behind the `Tokenizer` interface: the origin's
    own ids, reordered into ours (`IdOrder`), and the side's `prefix`/`suffix` tokens."""

    def __init__(self, directory: Path, side: dict[str, Any], reader: type[_PieceMap] | type[_JsonTokenizer],
                 languages: dict[str, Any] | None = None, origin: str | None = None) -> None:
        self.path = directory / side["model"]
        self.languages, self.origin = languages, origin
        if not self.path.is_file():
            raise InputError(str(self.path), "tokenizer model not found")
        self._reader = reader(directory, side)
        self.order = IdOrder.of(side)
        self._ours, self._origin = self.order.our_ids(), self.order.origin_ids()
        self.prefix = tuple(self.token_to_id(token) for token in side.get("prefix", []))
        self.suffix = tuple(self.token_to_id(token) for token in side.get("suffix", ["</s>"]))
        # Decoding drops the special tokens (unk too) and the templates' language codes, as Hugging
        # Face's `skip_special_tokens` does: every language code where they are special tokens.
        codes = list(languages["codes"].values()) if languages and languages.get("special") else []
        self._skip = {self._origin[i] for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID, *self.prefix, *self.suffix)}
        self._skip |= {found for token in codes if (found := self._reader.token_id(token)) is not None}

    def token_to_id(self, token: str) -> int:
        """Our id of `token` (a language code, a special token).

        Raises:
            InputError: if the tokenizer does not know it.
        """
        origin = self._reader.token_id(token)
        if origin is None or origin >= self.order.size:
            raise InputError(str(self.path), f"the tokenizer has no token {token!r}")
        return self._ours[origin]

    def to_origin(self, ids: Iterable[int]) -> list[int]:
        """The checkpoint's own ids of our `ids` (to compare with its tokenizer and model)."""
        return [self._origin[i] for i in ids]

    @property
    def vocab_size(self) -> int:
        return len(self._origin)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return self.encode_batch([text], add_bos, add_eos)[0]

    def encode_batch(self, texts: list[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        ours = self._ours
        head, tail = [BOS_ID] if add_bos else [], [EOS_ID] if add_eos else []
        return [head + [ours[i] for i in ids] + tail for ids in self._reader.encode(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._reader.decode([self._origin[i] for i in ids], self._skip)

    def pieces(self, text: str) -> list[str]:
        return [self._token(self._origin[i]) for i in self.encode(text)]

    def _token(self, origin_id: int) -> str:
        if origin_id == self.order.size:
            return "<s>"  # the BOS added to a vocabulary without one
        token = self._reader.token(origin_id)
        return f"<extra_{origin_id}>" if token is None else token  # rows past the tokenizer's (M2M's made-up words)

    def __iter__(self) -> Iterator[str]:
        return (self._token(origin) for origin in self._origin)
