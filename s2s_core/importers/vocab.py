"""An imported checkpoint's tokenizer files -> our package's `tokenizer/` directory.

What we keep (see `s2s_core.tokenizer` for how it is read back):
- marian: source.spm and target.spm (pieces) with the checkpoint's vocab.json (piece -> id);
- m2m_100 with tokenizer.json (NLLB as `save_pretrained` writes it): that file;
- m2m_100 with vocab.json + sentencepiece.bpe.model (M2M-100): the model, and a vocab.json that
  also numbers the language tokens `__xx__` after the pieces, as Hugging Face's tokenizer does;
- bart, mbart: tokenizer.json.
settings.json records, per side, the checkpoint's special ids (our ids are them reordered),
the vocabulary size (the embedding rows, which may exceed the tokenizer's: M2M-100's spare
rows) and the tokens a row starts and ends with (language codes, BOS, EOS).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.importers.families import Family
from s2s_core.importers.languages import M2M100_LISTS
from s2s_core.importers.source import Checkpoint, read_json
from s2s_core.tokenizer import SETTINGS_FILE, IdOrder

NAMES = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}
"""The special tokens every imported family names so."""


@dataclass
class Vocabulary:
    """How a checkpoint's tokenizer maps tokens to ids, and what we copy of it."""

    format: str
    """settings.json `format`: piece-map or tokenizer.json."""
    ids: dict[str, int]
    """Token -> the checkpoint's id (every token the tokenizer knows)."""
    files: dict[str, str]
    """Our file name -> the checkpoint's (copied as they are)."""
    sides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per side: its model file and (piece-map) vocab file."""
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    """Our file name -> a piece map we write ourselves."""
    legacy_language_suffix: bool = False
    """NLLB's `legacy_behaviour`: source rows end with EOS and the language code."""
    language_token: str = "{}"
    """How a language code is written as a token: `__{}__` for M2M-100, `>>{}<<` for Marian."""
    language_starts_decoder: bool = False
    """mBART-25's tokenizer (`MBartTokenizer`): rows end with EOS and the language code, and the
    decoder starts from the target language code (generation ends at EOS)."""
    languages: dict[str, str] = field(default_factory=dict)
    """Language code -> its token, for every language token the vocabulary has (`ita_Latn` ->
    `ita_Latn`, M2M-100's `it` -> `__it__`, Marian's `ita` -> `>>ita<<`); empty: not multilingual."""


@dataclass
class Templates:
    """Tokens each side's rows start and end with; the decoder start token, if the tokenizer
    decides it (mBART-25 starts from the target language code)."""

    source_prefix: list[str]
    source_suffix: list[str]
    target_prefix: list[str]
    target_suffix: list[str]
    decoder_start: str | None = None
    source_language: str | None = None
    """The language codes the rows were built for (the package's defaults); None: none given."""
    target_language: str | None = None


def read_vocabulary(checkpoint: Checkpoint, family: Family) -> Vocabulary:
    """The tokenizer files of `checkpoint` for `family`.

    Raises:
        CheckpointError: missing or unreadable tokenizer files.
    """
    if family.name == "marian":
        return _marian(checkpoint)
    if checkpoint.has("tokenizer.json"):
        return _tokenizer_json(checkpoint)
    if family.name == "m2m_100" and checkpoint.has("vocab.json") and checkpoint.has("sentencepiece.bpe.model"):
        return _m2m100(checkpoint)
    wanted = "tokenizer.json, or vocab.json and sentencepiece.bpe.model" if family.name == "m2m_100" else "tokenizer.json"
    raise CheckpointError(str(checkpoint.directory), f"has no tokenizer files for {family.name} (expected {wanted})")


def _marian(checkpoint: Checkpoint) -> Vocabulary:
    for name in ("source.spm", "target.spm", "vocab.json"):
        if not checkpoint.has(name):
            raise CheckpointError(str(checkpoint.directory / name), "missing (a Marian tokenizer needs source.spm, "
                                                                    "target.spm and vocab.json)")
    if checkpoint.has("tokenizer_config.json") and read_json(checkpoint.directory / "tokenizer_config.json").get(
            "separate_vocabs"):
        raise CheckpointError(str(checkpoint.directory / "tokenizer_config.json"),
                              "separate_vocabs=true (separate source and target vocabularies) is not supported")
    ids = _piece_map(checkpoint.directory / "vocab.json")
    sides: dict[str, dict[str, Any]] = {"source": {"model": "source.spm", "vocab": "vocab.json", "language_code_prefix": True},
                                         "target": {"model": "target.spm", "vocab": "vocab.json"}}
    codes = {match.group(1): token for token in ids if (match := _MARIAN_CODE.match(token))}
    return Vocabulary("piece-map", ids, {name: name for name in ("source.spm", "target.spm", "vocab.json")}, sides,
                      language_token=">>{}<<", languages=dict(sorted(codes.items())))


def _m2m100(checkpoint: Checkpoint) -> Vocabulary:
    config = read_json(checkpoint.directory / "tokenizer_config.json") if checkpoint.has("tokenizer_config.json") else {}
    codes_name = config.get("language_codes", "m2m100")
    if codes_name not in M2M100_LISTS:
        raise CheckpointError(str(checkpoint.directory / "tokenizer_config.json"),
                              f"unknown language_codes {codes_name!r} (known: {', '.join(M2M100_LISTS)})")
    ids = _piece_map(checkpoint.directory / "vocab.json")
    size = len(ids)  # language tokens are numbered after the pieces, as Hugging Face does
    ids |= {f"__{code}__": size + i for i, code in enumerate(M2M100_LISTS[codes_name])}
    side = {"model": "sentencepiece.bpe.model", "vocab": "vocab.json"}
    return Vocabulary("piece-map", ids, {"sentencepiece.bpe.model": "sentencepiece.bpe.model"},
                      {"source": dict(side), "target": dict(side)}, written={"vocab.json": ids}, language_token="__{}__",
                      languages={code: f"__{code}__" for code in M2M100_LISTS[codes_name]})


def _tokenizer_json(checkpoint: Checkpoint) -> Vocabulary:
    from tokenizers import Tokenizer as HFTokenizer

    path = checkpoint.directory / "tokenizer.json"
    try:
        tokenizer = HFTokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise CheckpointError(str(path), f"unreadable tokenizer.json ({err})") from None
    ids = tokenizer.get_vocab(with_added_tokens=True)
    # Language codes are added special tokens (NLLB `ita_Latn`, mBART `it_IT`); BART has none.
    added = sorted(token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special)
    codes = {_code_of(token): token for token in added if _JSON_CODE.match(token)}
    config = read_json(checkpoint.directory / "tokenizer_config.json") if checkpoint.has("tokenizer_config.json") else {}
    side = {"model": "tokenizer.json"}
    mbart25 = str(config.get("tokenizer_class", "")).startswith("MBartTokenizer")
    return Vocabulary("tokenizer.json", ids, {"tokenizer.json": "tokenizer.json"},
                      {"source": dict(side), "target": dict(side)},
                      legacy_language_suffix=bool(config.get("legacy_behaviour", False)),
                      language_starts_decoder=mbart25, languages=codes)


_MARIAN_CODE = re.compile(r"^>>([A-Za-z]{2,3}(?:_[A-Za-z]+)?)<<$")
"""A multilingual Marian target token: `>>ita<<`, `>>zho_Hans<<`."""
_JSON_CODE = re.compile(r"^(?:[a-z]{2,3}_[A-Z][A-Za-z]{1,3}|__[a-z]{2,3}__)$")
"""A language token of a tokenizer.json: NLLB `ita_Latn`, mBART `it_IT`, or M2M-100's `__it__`."""


def _code_of(token: str) -> str:
    """The code users write for a language token (`__it__` -> `it`; others are their own code)."""
    return token[2:-2] if token.startswith("__") else token


def _piece_map(path: Path) -> dict[str, int]:
    ids = read_json(path)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids.values()):
        raise CheckpointError(str(path), "must map pieces to integer ids")
    return ids


def special_ids(vocab: Vocabulary, config: dict[str, Any], rows: int, where: str) -> IdOrder:
    """The checkpoint's special ids (config.json's, checked against the tokenizer) over `rows` ids.

    Raises:
        CheckpointError: a tokenizer that disagrees with config.json, or knows more ids than the
            embedding table has rows.
    """
    problems = []
    found: dict[str, int | None] = {}
    for name, token in NAMES.items():
        in_tokenizer = vocab.ids.get(token)
        in_config = config.get(f"{name}_token_id")
        if isinstance(in_config, list):  # several EOS ids: the first is the one rows end with
            in_config = in_config[0] if in_config else None
        if name == "unk" or in_config is None:
            in_config = in_tokenizer
        if in_tokenizer != in_config:
            problems.append(f"the tokenizer's {token} is {in_tokenizer} but config.json's {name}_token_id is {in_config}")
        found[name] = in_config
    for name in ("pad", "unk", "eos"):
        if found[name] is None:
            problems.append(f"the tokenizer has no {NAMES[name]} token")
    biggest = max(vocab.ids.values(), default=-1)
    if biggest >= rows:
        problems.append(f"the tokenizer has ids up to {biggest} but the embedding table has {rows} rows")
    if problems:
        raise CheckpointError(where, "tokenizer and model do not match: " + "; ".join(problems))
    return IdOrder(size=rows, pad=found["pad"], unk=found["unk"], bos=found["bos"], eos=found["eos"])  # type: ignore[arg-type]


def templates(family: Family, vocab: Vocabulary, generation: dict[str, Any], id_to_token: dict[int, str],
              source_language: str | None, target_language: str | None) -> Templates:
    """The row templates of each side, as Hugging Face's tokenizer and `generate` build them.

    Raises:
        ConfigError: a language missing where the family needs one, or unknown to the tokenizer.
    """
    eos = [NAMES["eos"]]
    if family.name == "marian":  # multilingual targets are chosen by a leading >>xx<< token in the source
        code = [_language(vocab, "target_language", _code(family, vocab, target_language, ""))] if target_language else []
        return Templates(code, eos, [], eos, target_language=_code_of_token(vocab, code[0]) if code else None)
    if family.name == "bart":
        forced = generation.get("forced_bos_token_id")
        return Templates([NAMES["bos"]], eos, [] if forced is None else [id_to_token[forced]], eos)
    source = _language(vocab, "source_language", _code(family, vocab, source_language, "source_language"))
    target = _language(vocab, "target_language", _code(family, vocab, target_language, "target_language"))
    codes = {"source_language": _code_of_token(vocab, source), "target_language": _code_of_token(vocab, target)}
    if vocab.language_starts_decoder:
        return Templates([], eos + [source], [], eos + [target], decoder_start=target, **codes)
    if vocab.legacy_language_suffix:
        return Templates([], eos + [source], [target], eos, **codes)
    return Templates([source], eos, [target], eos, **codes)


def _code_of_token(vocab: Vocabulary, token: str) -> str:
    return next((code for code, known in vocab.languages.items() if known == token), token)


def _code(family: Family, vocab: Vocabulary, language: str | None, argument: str) -> str:
    """The language token for `language` (`it` or `__it__` for M2M-100, `ita_Latn` for NLLB, `it_IT` for mBART)."""
    if not language:
        raise ConfigError([f"`{argument}` is required to import a {family.name} checkpoint (a language code its "
                           f"tokenizer knows, e.g. ita_Latn for NLLB, it for M2M-100, it_IT for mBART)"])
    opening = vocab.language_token.split("{}")[0]  # `__` of `__{}__`, `>>` of `>>{}<<`, or nothing
    if opening and language.startswith(opening):
        return language  # given as the token itself (`__it__`)
    # A bare code is always wrapped: `it` may also be an ordinary piece of the vocabulary.
    return vocab.language_token.format(language)


def _language(vocab: Vocabulary, argument: str, token: str) -> str:
    if token not in vocab.ids:
        from s2s_core.generation.languages import closest_codes

        near = closest_codes(_code_of(token.strip(">").strip("<")), list(vocab.languages))
        hint = f" (closest codes: {', '.join(near)})" if near else ""
        raise ConfigError([f"`{argument}`: the tokenizer has no language token {token!r}{hint}"])
    return token


def write_tokenizer(directory: Path, checkpoint: Checkpoint, vocab: Vocabulary, order: IdOrder,
                    rows: Templates, family: Family) -> dict[str, Any]:
    """Write our tokenizer directory: the copied and written files, and settings.json (returned)."""
    directory.mkdir(parents=True, exist_ok=True)
    for ours, theirs in vocab.files.items():
        shutil.copyfile(checkpoint.directory / theirs, directory / ours)
    for name, ids in vocab.written.items():
        (directory / name).write_text(json.dumps(ids, ensure_ascii=False, indent=0, sort_keys=True) + "\n",
                                      encoding="utf-8")
    special = {"pad": order.pad, "unk": order.unk, "bos": order.bos, "eos": order.eos}
    sides = {}
    for side, (prefix, suffix) in {"source": (rows.source_prefix, rows.source_suffix),
                                   "target": (rows.target_prefix, rows.target_suffix)}.items():
        sides[side] = {**vocab.sides[side], "special_ids": special, "vocab_size": order.size,
                       "prefix": prefix, "suffix": suffix}
    settings = {"format": vocab.format, "origin": family.name, "sides": sides,
                "files": {side: sides[side]["model"] for side in sides}}
    languages = language_settings(family, vocab, rows)
    if languages:
        settings["languages"] = languages
    (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return settings


def language_settings(family: Family, vocab: Vocabulary, rows: Templates) -> dict[str, Any] | None:
    """settings.json `languages`: what decoding needs to choose the languages of each row
    (`s2s_core.generation.languages`); None for a model without language tokens.

    `layout` says where the codes go: prefix (NLLB, M2M-100, mBART-50: `[src] text </s>`, the
    target code forced first), suffix (NLLB's legacy_behaviour: `text </s> [src]`, the target code
    forced first), start (mBART-25: `text </s> [src]`, the decoder starts from the target code),
    marian (`>>tgt<< text </s>`, no source code). `codes`: code -> token; `source`/`target`: the
    defaults given at import; `special`: the codes are special tokens (dropped when decoding).
    """
    if not vocab.languages:
        return None
    if family.name == "marian":
        layout = "marian"
    elif vocab.language_starts_decoder:
        layout = "start"
    elif vocab.legacy_language_suffix:
        layout = "suffix"
    else:
        layout = "prefix"
    return {"layout": layout, "codes": vocab.languages, "source": rows.source_language,
            "target": rows.target_language, "special": family.name != "marian"}
