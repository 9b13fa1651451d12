"""The text layer on a small trained package: batch invariance on real sentences, input order,
empty inputs, long inputs split (translation) or truncated (summarization), token budgets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from s2s_core.generation import GenerationConfig, Generator, Summarizer, TextResult, Translator
from s2s_core.generation.engines import pad
from s2s_core.generation.text import token_budget_batches
from s2s_core.package import load_package, save_package
from s2s_core.tokenizer import EOS_ID, PAD_ID
from s2s_core.training.config import resolve
from s2s_core.training.trainer import Callbacks, fit
from tests.conftest import SAMPLE
from tests.s2s_core.conftest import read_pairs
from tests.s2s_core.training.common import make_trainer, tiny_run

# Real dev-set sentences of varied lengths (not seen in training).
SENTENCES = [source for source, _ in read_pairs(10, SAMPLE / "dev.tsv")]
LONG = "Open the file. Save the document now. Close the window."


@pytest.fixture(scope="module")
def package(real_pairs, tokenizer, tokenizer_dir, tmp_path_factory):
    """transformer-tiny trained 250 steps on the real pairs (about 10 s on 2 cores), as a package."""
    run = tiny_run(tokenizer.vocab_size, max_steps=250, log_every=50, **{
        "optim.lr": 5e-3, "schedule.warmup_steps": 30, "batching.max_tokens": 1500,
        "checkpoint.every_steps": 10_000})
    trainer = make_trainer(real_pairs, run)
    fit(trainer, None, tokenizer, Callbacks())
    directory = tmp_path_factory.mktemp("package")
    save_package(directory, trainer.module, resolve(run)[1], tokenizer_dir, {"steps": 250})
    return load_package(directory)


def same(a: TextResult, b: TextResult) -> bool:
    return (a.text, a.tokens, a.split, a.truncated, a.empty) == (b.text, b.tokens, b.split, b.truncated, b.empty) \
        and abs(a.score - b.score) < 1e-4


@pytest.mark.parametrize("beam", [1, 4])
def test_each_sentence_alone_equals_it_in_any_batch(package, beam):
    config = GenerationConfig(beam_size=beam)
    alone = [Translator(package, config)([sentence])[0] for sentence in SENTENCES]
    assert len({r.text for r in alone}) > len(SENTENCES) // 2  # guard: the model tells inputs apart
    assert all(r.tokens > 0 and r.text for r in alone)
    for max_tokens in (4096, 150, 60):  # all together, then batches of different sizes
        batched = Translator(package, replace(config, max_tokens=max_tokens))(SENTENCES)
        mismatched = [i for i, (a, b) in enumerate(zip(alone, batched)) if not same(a, b)]
        assert mismatched == [], f"max_tokens={max_tokens}"


def test_outputs_follow_input_order(package):
    translate = Translator(package, GenerationConfig(beam_size=2))
    forward = translate(SENTENCES)
    backward = translate(SENTENCES[::-1])
    assert [r.text for r in backward] == [r.text for r in forward][::-1]
    shuffled = random.Random(0).sample(range(len(SENTENCES)), len(SENTENCES))
    assert [r.text for r in translate([SENTENCES[i] for i in shuffled])] == [forward[i].text for i in shuffled]


def test_batches_are_length_sorted_and_respect_the_token_budget(package, monkeypatch):
    translate = Translator(package, GenerationConfig(beam_size=1, max_tokens=100))
    shapes = []
    real = translate.engine.generator.generate

    def spy(src, target=None):
        shapes.append(tuple(src.shape))
        return real(src, target)

    monkeypatch.setattr(translate.engine.generator, "generate", spy)
    translate(SENTENCES)
    assert sum(rows for rows, _ in shapes) == len(SENTENCES)
    assert all(rows * width <= 100 or rows == 1 for rows, width in shapes)
    assert [width for _, width in shapes] == sorted(width for _, width in shapes)
    assert len(shapes) > 1 and max(rows for rows, _ in shapes) > 1  # guard: real packing happened


def test_empty_and_whitespace_inputs_give_empty_results(package):
    texts = ["", SENTENCES[0], "   ", "\t\n", SENTENCES[1]]
    results = Translator(package, GenerationConfig(beam_size=2))(texts)
    assert [r.empty for r in results] == [True, False, True, True, False]
    for r in (results[0], results[2], results[3]):
        assert (r.text, r.score, r.tokens, r.split, r.truncated) == ("", 0.0, 0, False, False)
    alone = Translator(package, GenerationConfig(beam_size=2))([SENTENCES[0], SENTENCES[1]])
    assert same(results[1], alone[0]) and same(results[4], alone[1])
    assert Translator(package, GenerationConfig())(["", " "]) == [TextResult(text="", score=0.0, tokens=0, empty=True)] * 2


def test_a_long_input_is_translated_sentence_by_sentence(package):
    config = GenerationConfig(beam_size=2, max_source_tokens=12)
    tokenizer = package.source_tokenizer
    pieces = ["Open the file.", "Save the document now.", "Close the window."]
    assert len(tokenizer.encode(LONG)) + 1 > 12 and all(len(tokenizer.encode(p)) + 1 <= 12 for p in pieces)
    (result,) = Translator(package, config)([LONG])
    parts = Translator(package, config)(pieces)
    assert result.split and not result.truncated and not result.empty
    assert result.text == " ".join(p.text for p in parts)
    assert result.tokens == sum(p.tokens for p in parts)
    assert result.score == pytest.approx(sum(p.score for p in parts) / 3, abs=1e-5)
    assert not any(p.split for p in parts)


def test_a_sentence_longer_than_the_limit_is_cut_into_chunks_that_fit(package, monkeypatch):
    translate = Translator(package, GenerationConfig(beam_size=1, max_source_tokens=5))
    shapes = []
    real = translate.engine.generator.generate
    monkeypatch.setattr(translate.engine.generator, "generate",
                        lambda src, target=None: shapes.append(tuple(src.shape)) or real(src, target))
    (result,) = translate([SENTENCES[0]])  # one sentence, no sentence end inside
    count = len(package.source_tokenizer.encode(SENTENCES[0]))
    assert result.split and result.text
    assert sum(rows for rows, _ in shapes) == -(-count // 4)  # chunks of 4 tokens + EOS
    assert max(width for _, width in shapes) == 5


def test_a_long_input_is_truncated_for_summarization(package):
    config = GenerationConfig(beam_size=2, max_source_tokens=12)
    ids = package.source_tokenizer.encode(LONG)
    (result,) = Summarizer(package, config)([LONG])
    assert result.truncated and not result.split
    # the same as generating from the first 11 tokens plus EOS
    (best, *_), = Generator(package.model, config).generate(pad([ids[:11] + [EOS_ID]]))
    assert result.text == package.target_tokenizer.decode(best.tokens)
    assert result.score == pytest.approx(best.score, abs=1e-5)
    (short,) = Summarizer(package, config)(["Open the file."])
    assert not short.truncated and not short.split
    assert same(short, Translator(package, config)(["Open the file."])[0])


def test_nbest_texts_are_returned_best_first(package):
    (result,) = Translator(package, GenerationConfig(beam_size=4, nbest=3))([SENTENCES[3]])
    assert len(result.nbest) == 3
    assert result.nbest[0] == (result.text, result.score)
    assert [s for _, s in result.nbest] == sorted((s for _, s in result.nbest), reverse=True)


@pytest.mark.parametrize("lengths, budget, batches", [
    ([2, 3, 3, 5, 9, 20], 10, [[0, 1, 2], [3], [4], [5]]),
    ([1, 1, 1, 1], 4, [[0, 1, 2, 3]]),
    ([1, 1, 1, 1], 3, [[0, 1, 2], [3]]),
    ([50], 10, [[0]]),  # longer than the budget: alone
    ([], 10, []),
])
def test_token_budget_batches(lengths, budget, batches):
    assert list(token_budget_batches(lengths, budget)) == batches


def test_token_budget_batches_are_full_and_within_budget():
    rng = random.Random(1)
    for _ in range(50):
        lengths = sorted(rng.randint(1, 40) for _ in range(rng.randint(1, 60)))
        budget = rng.randint(1, 200)
        batches = list(token_budget_batches(lengths, budget))
        assert [i for batch in batches for i in batch] == list(range(len(lengths)))
        for batch, after in zip(batches, batches[1:] + [None]):
            rows = [lengths[i] for i in batch]
            assert len(rows) == 1 or len(rows) * max(rows) <= budget
            if after:  # greedy: the next row did not fit
                assert (len(rows) + 1) * max(rows + [lengths[after[0]]]) > budget


def test_pad_right_pads_with_pad_id():
    out = pad([[5, 6, EOS_ID], [EOS_ID]])
    assert out.dtype == torch.long
    assert out.tolist() == [[5, 6, EOS_ID], [EOS_ID, PAD_ID, PAD_ID]]


def test_truncation_cuts_long_documents_but_not_whitespace_that_fits(package):
    summarizer = Summarizer(package, GenerationConfig(beam_size=1, max_source_tokens=12))
    padded = "Open the file." + " " * 400 + "Close it."  # > 12 * 16 characters, few tokens
    long_text = "Open the file and close it again. " * 40
    padded_result, long_result = summarizer([padded, long_text])
    assert not padded_result.truncated and long_result.truncated
