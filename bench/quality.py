"""Translation quality for a fixed wall-time budget: ours against Hugging Face's own trainer.

Both systems get the same data, the same SentencePiece model, the same architecture size and
the same M minutes of training-step time on this machine (2 torch threads each), then translate
`../shared/data/en-it/test.tsv` (LibreOffice help: another origin than train) with beam 4, scored
by the same sacrebleu call (BLEU and chrF, with signatures).

  ours   `s2s prepare` on the full train.tsv (dev.tsv held out for validation, test.tsv as test),
         then `s2s train` preset=transformer-small max_minutes=M (1 worker, 2 CPUs; length-bucketed
         2,048-token batches, AdamW lr 1e-3, 500 warm-up steps, then linear decay to 0 at the end
         of the M minutes (`schedule.kind=linear`, which projects the run's last step from its
         speed): a schedule sized for the budget, where the default inverse-sqrt with 4,000
         warm-up steps is sized for days), then `s2s evaluate` beam_size=4.
  HF     `MarianMTModel` of the same size (d 256, 3+3 layers, 4 heads, FFN 1024, shared tied
         embeddings; bench/train_throughput.py's `marian`) on the same token ids, trained by
         `Seq2SeqTrainer` with its usual settings (batches of 32 sentences, AdamW lr 5e-4,
         inverse-sqrt schedule with 1,000 warm-up steps, label smoothing 0.1, clip 1.0), stopped by
         a callback after M minutes of training; `generate` with num_beams=4.

Usage: .venv/bin/python bench/quality.py --minutes 60 [--only ours|hf]
(needs `transformers` and `accelerate`, which `make bench` installs; the project uses neither).
Writes bench/out/quality/{table.md, results.json}; each system's row is kept, so the two can run
at different times (`--only`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data" / "en-it"
OUT = REPO / "bench" / "out" / "quality"
S2S = Path(sys.executable).parent / "s2s"
VOCAB, MAX_LEN, THREADS = 8000, 256, 2


def s2s(*args: str) -> None:
    subprocess.run([str(S2S), *args], check=True, cwd=REPO)


def prepare() -> Path:
    """The prepared dataset (reused when it already holds the same inputs and config)."""
    dataset = OUT / "dataset"
    s2s("prepare", "--input", str(DATA / "train.tsv"), "--valid", str(DATA / "dev.tsv"),
        "--test", str(DATA / "test.tsv"), "--output", str(dataset), f"tokenizer.vocab_size={VOCAB}")
    return dataset


def run_ours(dataset: Path, minutes: float) -> dict:
    run = OUT / f"ours-{minutes:g}min"
    s2s("train", "--data", str(dataset), "--output", str(run), "--workers", "1", "--cpus-per-worker", str(THREADS),
        "--force", "preset=transformer-small", "max_steps=100000000", f"max_minutes={minutes}",
        "batching.max_tokens=2048", "optim.lr=1e-3", "schedule.kind=linear", "schedule.warmup_steps=500", "validation.every_steps=0", "checkpoint.every_steps=1000", "log_every=100")
    metadata = json.loads((run / "model" / "metadata.json").read_text())
    s2s("evaluate", "--model", str(run / "model"), "--test", str(DATA / "test.tsv"), "--output", str(run / "eval"),
        "beam_size=4")
    report = json.loads((run / "eval" / "report.json").read_text())
    return {"system": "ours", "steps": metadata["step"], "train_seconds": metadata["training_seconds"],
            "tokens_seen": metadata["tokens_seen"], **_scores(report["scores"])}


def _scores(scores: dict) -> dict:
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "signature": scores["signature"]["bleu"]}


def hf_pairs(dataset: Path, split: str):
    """(source ids + EOS, target ids + EOS) of a split, from the same shards and tokenizer."""
    from s2s_core.tokenizer import EOS_ID, Tokenizer

    tokenizer = Tokenizer.from_dir(dataset / "tokenizer")
    table = _read_split(dataset, split)
    sources = tokenizer.encode_batch(table["source"])
    targets = tokenizer.encode_batch(table["target"])
    keep = [(s + [EOS_ID], t + [EOS_ID]) for s, t in zip(sources, targets)
            if 1 <= len(s) <= MAX_LEN and 1 <= len(t) <= MAX_LEN]  # the limits `s2s train` uses
    return keep, tokenizer


def _read_split(dataset: Path, split: str) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    tables = [pq.read_table(path, columns=["source", "target"]) for path in sorted((dataset / split).glob("*.parquet"))]
    return {column: [value for t in tables for value in t.column(column).to_pylist()] for column in ("source", "target")}


def run_hf(dataset: Path, minutes: float) -> dict:
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from s2s_core.metrics import translation_scores
    from s2s_core.tokenizer import PAD_ID
    from train_throughput import marian

    torch.set_num_threads(THREADS)
    pairs, tokenizer = hf_pairs(dataset, "train")
    model = marian(tokenizer.vocab_size)

    class TimeBudget(TrainerCallback):
        """Stops training once the training steps have taken `minutes` (as `max_minutes` does)."""

        def __init__(self) -> None:
            self.spent = 0.0
            self.started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.spent += time.perf_counter() - self.started
            if self.spent >= minutes * 60:
                control.should_training_stop = True

    def collate(rows: list[dict]) -> dict:
        width_src = max(len(r["input_ids"]) for r in rows)
        width_tgt = max(len(r["labels"]) for r in rows)
        src = torch.full((len(rows), width_src), PAD_ID)
        labels = torch.full((len(rows), width_tgt), -100)
        for i, r in enumerate(rows):
            src[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
        # With label smoothing the trainer takes the labels out before the forward pass, so the
        # decoder inputs come from the collator, as DataCollatorForSeq2Seq makes them.
        return {"input_ids": src, "attention_mask": src.ne(PAD_ID).long(), "labels": labels,
                "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels=labels)}

    run = OUT / f"hf-{minutes:g}min"
    budget = TimeBudget()
    arguments = Seq2SeqTrainingArguments(
        output_dir=str(run), per_device_train_batch_size=32, learning_rate=5e-4, lr_scheduler_type="inverse_sqrt",
        warmup_steps=1000, weight_decay=0.0, adam_beta2=0.98, label_smoothing_factor=0.1, max_grad_norm=1.0,
        max_steps=100_000_000, save_strategy="no", eval_strategy="no", logging_steps=100, report_to=[],
        use_cpu=True, dataloader_num_workers=0, seed=1, remove_unused_columns=False)
    trainer = Seq2SeqTrainer(model=model, args=arguments, data_collator=collate, callbacks=[budget],
                             train_dataset=[{"input_ids": s, "labels": t} for s, t in pairs])
    trainer.train()
    steps = trainer.state.global_step
    test = [line.split("\t") for line in (DATA / "test.tsv").read_text(encoding="utf-8").splitlines()]
    outputs = _hf_translate(model.eval(), tokenizer, [s for s, _ in test])
    run.mkdir(parents=True, exist_ok=True)
    (run / "outputs.txt").write_text("".join(o + "\n" for o in outputs), encoding="utf-8")
    return {"system": "hf", "steps": steps, "train_seconds": round(budget.spent, 1),
            **_scores(translation_scores(outputs, [t for _, t in test]))}


def _hf_translate(model, tokenizer, sources: list[str], batch: int = 32) -> list[str]:
    import torch

    from s2s_core.tokenizer import EOS_ID, PAD_ID

    ids = [tokenizer.encode(s)[:MAX_LEN - 1] + [EOS_ID] for s in sources]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outputs: dict[int, str] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            chosen = order[start:start + batch]
            width = max(len(ids[i]) for i in chosen)
            src = torch.full((len(chosen), width), PAD_ID)
            for row, i in enumerate(chosen):
                src[row, :len(ids[i])] = torch.tensor(ids[i])
            generated = model.generate(input_ids=src, attention_mask=src.ne(PAD_ID).long(), num_beams=4,
                                       max_new_tokens=int(1.5 * width) + 10)
            for row, i in enumerate(chosen):
                outputs[i] = tokenizer.decode(generated[row].tolist())
    return [outputs[i] for i in range(len(ids))]


def table(results: dict, minutes: float) -> str:
    rows = [results[name] for name in ("ours", "hf") if name in results]
    lines = [f"| system ({minutes:g} min) | steps | train s | test BLEU | test chrF |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['system']} | {r['steps']:,} | {r['train_seconds']:,.0f} | {r['bleu']} | {r['chrf']} |" for r in rows]
    if {"ours", "hf"} <= set(results):
        delta = results["ours"]["bleu"] - results["hf"]["bleu"]
        lines.append(f"\nours - HF: {delta:+.2f} BLEU (target at 60 min: >= +2); signature {rows[0]['signature']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--only", choices=["ours", "hf"])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    dataset = prepare()
    results_file = OUT / f"results-{args.minutes:g}min.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name, run in (("ours", run_ours), ("hf", run_hf)):
        if args.only in (None, name):
            results[name] = run(dataset, args.minutes)
            results_file.write_text(json.dumps(results, indent=2) + "\n")
    text = table(results, args.minutes)
    (OUT / f"table-{args.minutes:g}min.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
