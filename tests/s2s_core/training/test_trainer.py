"""The training loop on real pairs: learning, exact resume, accumulation, validation, early
stopping and the written history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s2s_core.training.trainer import Callbacks, fit
from s2s_core.training.validation import ValidationSet
from tests.conftest import SAMPLE
from tests.s2s_core.conftest import read_pairs
from tests.s2s_core.training.common import make_trainer, parameters, tiny_run


def test_loss_falls_and_counters_advance(real_pairs, tokenizer):
    trainer = make_trainer(real_pairs, tiny_run(tokenizer.vocab_size, max_steps=30))
    fit(trainer, None, tokenizer, Callbacks())
    losses = [r["loss"] for r in trainer.history.train]
    assert len(losses) == 30 and trainer.state.step == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert trainer.state.position == 30 and trainer.state.tokens_seen == sum(
        r["tokens_seen"] - (trainer.history.train[i - 1]["tokens_seen"] if i else 0)
        for i, r in enumerate(trainer.history.train))
    last = trainer.history.train[-1]
    assert 0 < last["padding"] < 0.3 and last["tokens_per_s"] > 0 and last["grad_norm"] > 0
    assert last["lr"] < 2e-3  # inverse square root decay after 5 warm-up steps



def test_a_linear_schedule_spends_its_decay_within_max_minutes(real_pairs, tokenizer):
    """max_steps is far away: the time budget ends the run, and the rate has reached ~0 by then."""
    run = tiny_run(tokenizer.vocab_size, max_steps=1_000_000, max_minutes=0.03,
                   **{"schedule.kind": "linear", "schedule.warmup_steps": 2})
    trainer = make_trainer(real_pairs, run)
    fit(trainer, None, tokenizer, Callbacks())
    rates = [r["lr"] for r in trainer.history.train]
    assert 5 < trainer.state.step < 1_000_000 and trainer.state.wall_seconds >= 1.8
    assert rates[1] == pytest.approx(2e-3)  # the peak, at the end of warm-up
    # The projected end moves a little with each step's time, so the decay is not exactly
    # monotone; it is linear in steps when the speed is steady.
    assert rates[-1] < 0.25 * 2e-3 and rates[len(rates) // 2] < 0.8 * 2e-3

def test_restart_after_10_steps_reaches_the_parameters_of_20_steps(real_pairs, tokenizer, tmp_path, tokenizer_dir):
    run = tiny_run(tokenizer.vocab_size, max_steps=20)  # dropout 0.1 stays on: it must be replayed too
    straight = make_trainer(real_pairs, run)
    fit(straight, None, tokenizer, Callbacks())

    first = make_trainer(real_pairs, run)
    saved = []

    def checkpoint_then_die(trainer, final):
        trainer.save(tmp_path / f"step-{trainer.state.step}", run, tokenizer_dir)
        saved.append(trainer.state.step)
        raise KeyboardInterrupt  # the process is killed right after its first checkpoint

    with pytest.raises(KeyboardInterrupt):
        fit(first, None, tokenizer, Callbacks(on_checkpoint=checkpoint_then_die))
    assert saved == [10]

    torch.manual_seed(12345)  # the new process starts from other RNG states
    second = make_trainer(real_pairs, run)
    second.resume_from(tmp_path / "step-10")
    assert (second.state.step, second.state.position) == (10, 10)
    fit(second, None, tokenizer, Callbacks())
    assert second.state.step == 20
    straight_params, resumed_params = parameters(straight), parameters(second)
    for name, value in straight_params.items():
        torch.testing.assert_close(resumed_params[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert [r["step"] for r in second.history.train] == list(range(1, 21))
    assert second.state.tokens_seen == straight.state.tokens_seen
    # the Adam moments were restored too, not re-initialised
    assert second.optimizer.state_dict()["state"][0]["step"] == straight.optimizer.state_dict()["state"][0]["step"]


def test_accumulating_two_micro_batches_equals_one_worker_seeing_them(real_pairs, tokenizer):
    # Accumulation 2 consumes global positions 0,1 per step: the update must equal a trainer
    # whose single micro-batch is their union, up to float error (token-mean normalisation).
    run = tiny_run(tokenizer.vocab_size, max_steps=3, **{"optim.accumulation": 2, "model": {
        "src_vocab_size": tokenizer.vocab_size, "tgt_vocab_size": tokenizer.vocab_size, "dropout": 0.0}})
    accumulated = make_trainer(real_pairs, run)
    fit(accumulated, None, tokenizer, Callbacks())
    assert accumulated.state.position == 6
    union = make_trainer(real_pairs, run | {"optim": {"lr": 2e-3}})
    rows = [torch.from_numpy(accumulated.stream.rows(2 * s)).tolist() + torch.from_numpy(
        accumulated.stream.rows(2 * s + 1)).tolist() for s in range(3)]
    union.stream.rows = lambda position: np.asarray(rows[position])
    fit(union, None, tokenizer, Callbacks())
    torch.testing.assert_close([r["loss"] for r in union.history.train],
                               [r["loss"] for r in accumulated.history.train], rtol=1e-5, atol=0)
    accumulated_params = parameters(accumulated)
    for name, value in parameters(union).items():
        torch.testing.assert_close(without_key_bias(name, accumulated_params[name]), without_key_bias(name, value),
                                   rtol=1e-4, atol=1e-5, msg=name)


def without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """Drop attention key biases: their true gradient is exactly zero (softmax ignores a shift
    shared by all keys), so Adam divides float noise by float noise there and any two
    summation orders disagree. Everything else must match."""
    if name.endswith("qkv.bias"):
        return value.view(3, -1)[[0, 2]]
    if name.endswith("kv.bias"):
        return value.view(2, -1)[1]
    return value


def test_validation_keeps_the_best_and_stops_early(real_pairs, tokenizer, tmp_path):
    pairs = read_pairs(60, SAMPLE / "dev.tsv")
    valid = ValidationSet(
        pairs=type(real_pairs).from_lists(tokenizer.encode_batch([s for s, _ in pairs]),
                                          tokenizer.encode_batch([t for _, t in pairs])),
        references=[t for _, t in pairs])
    # lr 0 after the first steps makes the loss plateau: patience must stop the run early.
    run = tiny_run(tokenizer.vocab_size, max_steps=100, **{
        "validation.every_steps": 4, "validation.metric": "loss", "validation.patience": 2,
        "validation.decode_sentences": 20, "schedule.kind": "constant", "optim.lr": 1e-9})
    trainer = make_trainer(real_pairs, run)
    best_steps = []
    fit(trainer, valid, tokenizer, Callbacks(on_best=lambda t: best_steps.append(t.state.step)))
    assert trainer.stopped_early and trainer.state.step < 100
    scores = trainer.history.valid
    assert [s["step"] for s in scores] == list(range(4, trainer.state.step + 1, 4))
    assert all(0 <= s["bleu"] <= 100 and 0 <= s["chrf"] <= 100 and s["sentences"] == 20 for s in scores)
    assert best_steps and trainer.state.best_step == best_steps[-1]
    assert trainer.state.best_score == min(s["valid_loss"] for s in scores)
    assert trainer.state.bad_validations == 2

    paths = trainer.history.write(tmp_path / "metrics")
    assert {p.name for p in paths} == {"train.jsonl", "train.csv", "valid.jsonl", "valid.csv", "curves.png"}
    assert (tmp_path / "metrics" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "metrics" / "train.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,loss,nll,lr,grad_norm,tokens_per_s,padding")
    lines = (tmp_path / "metrics" / "valid.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [s["step"] for s in scores]


def test_max_epochs_stops_after_one_pass(real_pairs, tokenizer):
    trainer = make_trainer(real_pairs, tiny_run(tokenizer.vocab_size, max_steps=10_000, max_epochs=1,
                                                **{"batching.max_tokens": 4000}))
    fit(trainer, None, tokenizer, Callbacks())
    assert trainer.state.epoch == 1 and trainer.state.position == trainer.stream.batches_per_epoch


def test_max_minutes_stops_on_the_step_time_budget(real_pairs, tokenizer):
    budget_s = 1.5
    trainer = make_trainer(real_pairs, tiny_run(tokenizer.vocab_size, max_steps=100_000, max_minutes=budget_s / 60))
    fit(trainer, None, tokenizer, Callbacks())
    # It stops on the first step that reaches the budget: the time before that step was short of it.
    last_step_s = trainer.history.train[-1]["seconds_per_step"]
    assert budget_s <= trainer.state.wall_seconds < budget_s + last_step_s
    assert 1 < trainer.state.step < 100_000
