"""Imported packages agree with the Hugging Face checkpoints they came from: the same token ids,
the same teacher-forced log-probabilities, the same greedy and beam outputs as `generate`."""

from __future__ import annotations

import pytest
import torch

from s2s_core.generation import GenerationConfig, Generator, Translator
from s2s_core.generation.engines import pad
from s2s_core.package import load_package

from .conftest import LIMIT, Case


def our_rows(tokenizer, texts: list[str]) -> list[list[int]]:
    """Model rows (the side's prefix and suffix around the text's ids), in our ids."""
    return [tokenizer.row(ids) for ids in tokenizer.encode_batch(texts)]


@pytest.mark.parametrize("side", ["source", "target"])
def test_token_ids_equal_the_checkpoint_tokenizer(case: Case, token_sentences, side):
    tokenizer = case.package.source_tokenizer if side == "source" else case.package.target_tokenizer
    keyword = "text" if side == "source" else "text_target"
    expected = case.hf_tokenizer(**{keyword: token_sentences})["input_ids"]
    ours = [tokenizer.to_origin(row) for row in our_rows(tokenizer, token_sentences)]
    wrong = [(text, mine, theirs) for text, mine, theirs in zip(token_sentences, ours, expected) if mine != theirs]
    assert wrong == []
    if case.family != "bart":  # byte-level BPE has no unknown characters; the others meet some here
        assert any(case.hf_tokenizer.unk_token_id in row for row in expected)


def test_log_probabilities_equal_the_checkpoint_model(case: Case, model_pairs):
    sources, targets = [s for s, _ in model_pairs[:100]], [t for _, t in model_pairs[:100]]
    batch = case.hf_tokenizer(sources, text_target=targets, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = torch.log_softmax(case.hf_model(**batch).logits.double(), dim=-1)
    labels = batch["labels"]
    real = labels != case.hf_tokenizer.pad_token_id
    expected = theirs.gather(-1, labels[..., None])[..., 0][real]  # (N,) one per real target token

    model, target_tokenizer = case.package.model, case.package.target_tokenizer
    rows = our_rows(target_tokenizer, targets)
    assert [target_tokenizer.to_origin(row) for row in rows] == [row[mask].tolist() for row, mask in zip(labels, real)]
    prev = pad([[model.decoder_start_id] + row[:-1] for row in rows])
    with torch.no_grad():
        ours = torch.log_softmax(model(pad(our_rows(case.package.source_tokenizer, sources)), prev).double(), dim=-1)
    gold = pad(rows)
    found = ours.gather(-1, gold[..., None])[..., 0][gold != 0]
    assert found.shape == expected.shape
    torch.testing.assert_close(found, expected, atol=1e-4, rtol=0)
    assert expected.mean() < -1.0  # a real distribution, not a degenerate one that anything matches


def hf_outputs(case: Case, sources: list[str], beams: int, penalty: float) -> list[list[int]]:
    """`generate`'s outputs after the start token and forced prefix, up to EOS (excluded)."""
    inputs = case.hf_tokenizer(sources, return_tensors="pt", padding=True)
    prefix = case.package.target_tokenizer.to_origin(case.package.target_tokenizer.prefix)
    if prefix:  # the target language (NLLB) or <s> (BART): how Hugging Face users choose it
        inputs["forced_bos_token_id"] = prefix[0]
    # mBART-25's decoder starts from the target language code: users pass it so too.
    inputs["decoder_start_token_id"] = case.package.target_tokenizer.to_origin([case.package.model.decoder_start_id])[0]
    generated = case.hf_model.generate(
        **inputs, num_beams=beams, do_sample=False, early_stopping=True, length_penalty=penalty,
        max_length=LIMIT + (2 if case.forced_eos else 1), bad_words_ids=[[i] for i in case.suppress])
    skip = 1 + len(case.package.target_tokenizer.prefix)
    eos = case.hf_tokenizer.eos_token_id
    out = []
    for row in generated.tolist():
        tokens = row[skip:]
        out.append(tokens[: tokens.index(eos)] if eos in tokens else tokens)
    return out


def our_outputs(case: Case, sources: list[str], beams: int, penalty: float) -> list[list[int]]:
    config = GenerationConfig(beam_size=beams, length_penalty=penalty, length_normalization="power",
                              limit_ending="forced-eos" if case.forced_eos else "cut",
                              max_len_a=0.0, max_len_b=LIMIT, max_length=LIMIT)
    package = case.package
    generator = Generator(package.model, config, prefix=package.target_tokenizer.prefix)
    hypotheses = generator.generate(pad(our_rows(package.source_tokenizer, sources)))
    return [package.target_tokenizer.to_origin(hyps[0].tokens) for hyps in hypotheses]


@pytest.mark.parametrize("beams, penalty", [(1, 1.0), (4, 0.8)], ids=["greedy", "beam4"])
def test_outputs_equal_generate(case: Case, model_pairs, beams, penalty):
    sources = [s for s, _ in model_pairs]
    expected = hf_outputs(case, sources, beams, penalty)
    found = our_outputs(case, sources, beams, penalty)
    wrong = [(i, mine, theirs) for i, (mine, theirs) in enumerate(zip(found, expected)) if mine != theirs]
    assert wrong == []
    room = LIMIT - len(case.package.target_tokenizer.prefix)  # the forced prefix counts towards the limit
    ended = sum(len(tokens) < room for tokens in expected)
    assert 0 < ended < len(expected)  # both endings met: EOS chosen, and the length limit


def test_the_text_layer_wraps_sources_and_forces_the_prefix(case: Case, model_pairs):
    sources = [s for s, _ in model_pairs[:24]]
    config = GenerationConfig(beam_size=2, length_normalization="power", max_len_a=0.0, max_len_b=LIMIT,
                              max_length=LIMIT, engine="torch",
                              limit_ending="forced-eos" if case.forced_eos else "cut")
    # A package of its own: the torch engine packs its model's weights for CPU inference in place.
    results = Translator(load_package(case.package.directory), config)(sources)
    generator = Generator(case.package.model, config, prefix=case.package.target_tokenizer.prefix)
    expected = generator.generate(pad(our_rows(case.package.source_tokenizer, sources)))
    decode = case.package.target_tokenizer.decode
    assert [r.text for r in results] == [decode(hyps[0].tokens) for hyps in expected]
    assert any(r.text for r in results)


def test_decoding_equals_the_checkpoint_tokenizers(case: Case, token_sentences):
    # What generation returns: a hypothesis's ids, without the forced prefix and EOS.
    tokenizer = case.package.target_tokenizer
    rows = tokenizer.encode_batch(token_sentences)
    expected = case.hf_tokenizer.batch_decode([tokenizer.to_origin(row) for row in rows], skip_special_tokens=True)
    found = [tokenizer.decode(row) for row in rows]
    assert [(i, a, b) for i, (a, b) in enumerate(zip(found, expected)) if a != b] == []
