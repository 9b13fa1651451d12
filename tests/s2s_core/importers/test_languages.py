"""Languages chosen when decoding (`source_lang`, `target_lang`): the package records every
language code of its vocabulary, other pairs than the import's defaults give what Hugging Face's
`generate` gives with the tokenizer's `src_lang` and a forced first token (or decoder start),
unknown codes are one line naming the closest, and inputs of one call may each have their own
target language."""

from __future__ import annotations

import pytest

from s2s_core.errors import ConfigError
from s2s_core.generation import GenerationConfig, Generator, Translator
from s2s_core.generation.engines import pad
from s2s_core.generation.generator import TargetStart
from s2s_core.generation.languages import Languages, language_problems
from s2s_core.package import load_package
from s2s_core.tokenizer import EOS_ID

from .conftest import LIMIT, Case

OTHER_PAIR = {"nllb": ("fra_Latn", "deu_Latn"), "mbart": ("fr_XX", "de_DE"), "mbart25": ("fr_XX", "de_DE"),
              "m2m100": ("fr", "de")}
"""A language pair other than the one each package was imported with."""
FAN_OUT = {"nllb": ["ita_Latn", "deu_Latn", "spa_Latn"], "mbart": ["it_IT", "de_DE", "es_XX"],
           "mbart25": ["it_IT", "de_DE", "es_XX"], "m2m100": ["it", "de", "es"]}


def kind(case: Case) -> str:
    """The case's name: mBART-25 and mBART-50 are both the mbart family."""
    fifty = "MBart50" in type(case.hf_tokenizer).__name__
    return "mbart25" if case.family == "mbart" and not fifty else case.family


def greedy(case: Case, **languages: str) -> GenerationConfig:
    return GenerationConfig(beam_size=1, length_normalization="power", max_len_a=0.0, max_len_b=LIMIT,
                            max_length=LIMIT, engine="torch", limit_ending="forced-eos" if case.forced_eos else "cut",
                            **languages)


def hf_generate(case: Case, sources: list[str], source: str, target: str) -> list[list[int]]:
    """Hugging Face's greedy outputs with the tokenizer's `src_lang` and the target language as its
    users give it: forced first (`forced_bos_token_id`), or as the decoder start (mBART-25)."""
    tokenizer = case.hf_tokenizer
    previous = tokenizer.src_lang
    tokenizer.src_lang = source
    try:
        inputs = tokenizer(sources, return_tensors="pt", padding=True)
    finally:
        tokenizer.src_lang = previous
    code = tokenizer.convert_tokens_to_ids(f"__{target}__" if case.family == "m2m100" else target)
    starts_decoder = kind(case) == "mbart25"
    extra = {"decoder_start_token_id": code} if starts_decoder else {"forced_bos_token_id": code}
    generated = case.hf_model.generate(**inputs, **extra, num_beams=1, do_sample=False,
                                       max_length=LIMIT + (2 if case.forced_eos else 1),
                                       bad_words_ids=[[i] for i in case.suppress])
    skip, eos = (1 if starts_decoder else 2), tokenizer.eos_token_id
    return [row[skip:][: row[skip:].index(eos)] if eos in row[skip:] else row[skip:] for row in generated.tolist()]


@pytest.fixture(params=["nllb", "mbart", "mbart25", "m2m100"])
def multilingual(request) -> Case:
    return request.getfixturevalue(f"{request.param}_case")


def test_the_package_records_every_language_code(case: Case):
    section = case.package.source_tokenizer.languages
    if case.family in ("marian", "bart"):  # no language tokens in their vocabularies
        assert section is None
        return
    expected = {"nllb": ("prefix", 202, "ita_Latn", "ita_Latn"), "mbart": ("prefix", 52, "it_IT", "it_IT"),
                "mbart25": ("start", 52, "it_IT", "it_IT"), "m2m100": ("prefix", 100, "it", "__it__")}[kind(case)]
    layout, count, target, token = expected
    assert (section["layout"], len(section["codes"]), section["target"]) == (layout, count, target)
    assert section["codes"][target] == token and section["special"]


def test_other_languages_equal_generate_with_src_lang_and_a_forced_target(multilingual: Case, model_pairs):
    case, sources = multilingual, [s for s, _ in model_pairs[:60]]
    source, target = OTHER_PAIR[kind(case)]
    expected = hf_generate(case, sources, source, target)
    # Ids: the template of the pair around each row, the target started as the template says.
    package = case.package
    template = Languages(package.source_tokenizer, package.target_tokenizer).template(source, target)
    rows = [template.row(ids) for ids in package.source_tokenizer.encode_batch(sources)]
    hypotheses = Generator(package.model, greedy(case)).generate(pad(rows), template.target)
    found = [package.target_tokenizer.to_origin(hyps[0].tokens) for hyps in hypotheses]
    assert [(i, a, b) for i, (a, b) in enumerate(zip(found, expected)) if a != b] == []
    # Text: the Translator with the options.
    results = Translator(load_package(package.directory), greedy(case, source_lang=source, target_lang=target))(sources)
    assert [r.text for r in results] == case.hf_tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert {r.target_lang for r in results} == {target}
    defaults = hf_generate(case, sources, *_defaults(case))
    assert sum(a != b for a, b in zip(expected, defaults)) > len(sources) // 4  # the languages changed outputs


def _defaults(case: Case) -> tuple[str, str]:
    section = case.package.source_tokenizer.languages
    return section["source"], section["target"]


def test_each_input_may_have_its_own_target_language(multilingual: Case, model_pairs):
    case, sources = multilingual, [s for s, _ in model_pairs[:30]]
    codes = FAN_OUT[kind(case)]
    per_row = [codes[i % len(codes)] for i in range(len(sources))]
    translator = Translator(load_package(case.package.directory), greedy(case))
    mixed = translator(sources, target_langs=per_row)
    assert [r.target_lang for r in mixed] == per_row
    for code in codes:  # the same as translating each language's rows on their own, and as generate
        members = [s for s, c in zip(sources, per_row) if c == code]
        alone = translator(members, target_langs=[code] * len(members))
        assert [r.text for r, c in zip(mixed, per_row) if c == code] == [r.text for r in alone]
        expected = hf_generate(case, members[:4], _defaults(case)[0], code)
        assert [r.text for r in alone[:4]] == case.hf_tokenizer.batch_decode(expected, skip_special_tokens=True)


def test_an_unknown_code_is_one_line_with_the_closest_codes(nllb_case, mbart_case, m2m100_case):
    for case, code, closest in [(nllb_case, "ita_latn", "ita_Latn"), (nllb_case, "it", "ita_Latn"),
                                (mbart_case, "it_it", "it_IT"), (m2m100_case, "itt", "it")]:
        with pytest.raises(ConfigError) as caught:
            Translator(case.package, greedy(case, target_lang=code))
        message = str(caught.value)
        assert f"`target_lang`: unknown language code {code!r} for this model (closest: " in message
        assert closest in message.split("closest: ")[1] and "\n" not in message
    with pytest.raises(ConfigError, match=r"`source_lang`: unknown language code 'english' .*; `target_lang`"):
        Translator(nllb_case.package, greedy(nllb_case, source_lang="english", target_lang="xx"))
    # A package of its own: the torch engine packs its model's weights for CPU inference in place.
    own = load_package(m2m100_case.package.directory)
    assert Translator(own, greedy(m2m100_case, target_lang="__de__")).target_lang == "de"


def test_models_without_languages_refuse_language_options(marian_case, bart_case):
    for case in (marian_case, bart_case):
        with pytest.raises(ConfigError, match=rf"`target_lang`: this {case.package.source_tokenizer.origin} model has "
                                              r"no language codes to choose from"):
            Translator(case.package, greedy(case, target_lang="ita"))
    assert language_problems(None, None, "en", "it") == [
        "`source_lang`/`target_lang`: this model (trained here) has no language codes to choose from (languages are "
        "for multilingual imported models: NLLB, M2M-100, mBART, multilingual Marian)"]
    translator = Translator(load_package(marian_case.package.directory), greedy(marian_case))
    assert translator.target_problem("ita") == "target language 'ita': this model has no language codes"


def test_a_multilingual_marian_takes_its_target_as_a_source_token():
    section = {"layout": "marian", "codes": {"ita": ">>ita<<", "fra": ">>fra<<"}, "source": None, "target": None,
               "special": False}
    assert language_problems(section, "marian", None, "ita") == []
    assert language_problems(section, "marian", None, None) == []  # the >>xx<< token may be in the text
    assert language_problems(section, "marian", "eng", "ita") == [
        "`source_lang`: a Marian model takes no source language (only `target_lang`, its >>xx<< token)"]
    assert "closest: ita" in language_problems(section, "marian", None, "itx")[0]


class _MarianTokenizer:
    """A stand-in for the tokenizer of a multilingual OPUS-MT package (`>>xx<<` tokens)."""

    path = "tokenizer/settings.json"
    origin = "marian"
    languages = {"layout": "marian", "codes": {"ita": ">>ita<<", "fra": ">>fra<<"}, "source": None, "target": "ita",
                 "special": False}
    prefix, suffix = (7,), (EOS_ID,)

    def token_to_id(self, token: str) -> int:
        return {">>ita<<": 7, ">>fra<<": 8}[token]


def test_a_multilingual_marian_target_is_its_leading_source_token():
    tokenizer = _MarianTokenizer()
    languages = Languages(tokenizer, tokenizer)  # type: ignore[arg-type]
    assert languages.template(None, None).row([20, 21]) == [7, 20, 21, EOS_ID]
    fra = languages.template(None, "fra")
    assert (fra.row([20]), fra.target, fra.target_lang) == ([8, 20, EOS_ID], TargetStart(), "fra")
    assert languages.template(None, ">>fra<<").target_lang == "fra"
