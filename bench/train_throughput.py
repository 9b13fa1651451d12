"""Training throughput of `transformer-small`: our trainer against Hugging Face Marian, in one run.

All rows train the same architecture (d 256, 3+3 layers, 4 heads, FFN 1024, ReLU, pre-norm for
ours / post-norm for Marian, shared and tied 8k embeddings, dropout 0.1, label smoothing 0.1,
AdamW, clip 1.0) on real en-it pairs, fp32 on the CPU, with the same thread count. Rows:

  ours                 s2s_core.training.Trainer.train_step on length-bucketed batches under a
                       4,096-token budget (rows x longest side), as `s2s train` runs it.
  HF Marian, usual     MarianMTModel, plain PyTorch loop, shuffled rows packed under the same
                       4,096-token budget and padded to their longest row (no length bucketing,
                       as with HF's default sampler): same memory per step, the usual padding.
  HF Marian, our batches  the same model and loop on exactly our batches: the model alone.

Tokens/s counts non-padding source + target tokens (EOS included) over the timed steps; the
first --warmup steps of each row are not timed. Each row runs in a fresh subprocess and
reports its own peak RSS. A 2048x2048 fp32 matmul gives the machine's ceiling for context.

Usage: .venv/bin/python bench/train_throughput.py [--steps 40] [--warmup 5]
(needs `transformers`, which `make bench` installs into .venv; the project does not use it).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from s2s_core.data.config import TokenizerConfig
from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece
from s2s_core.training.batching import TokenizedPairs, make_batch, usable_rows

REPO = Path(__file__).resolve().parents[1]

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "en-it" / "train.tsv"
OUT = REPO / "bench" / "out"
CACHE = OUT / "train_bench"
PAIRS, VOCAB, MAX_TOKENS, LR = 60_000, 8000, 4096, 7e-4
ROWS = ["ours", "hf-usual", "hf-ours"]
TITLES = {"ours": "ours (s2s_core Trainer)", "hf-usual": "HF Marian, usual batches",
          "hf-ours": "HF Marian, our batches"}


def read_pairs(path: Path, limit: int) -> list[tuple[str, str]]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 2 and fields[0].strip() and fields[1].strip():
                pairs.append((fields[0], fields[1]))
            if len(pairs) == limit:
                break
    return pairs


def prepare(corpus: Path) -> None:
    """Tokenizer and token ids, cached under bench/out/train_bench (built once)."""
    if (CACHE / "pairs.npz").exists():
        return
    pairs = read_pairs(corpus, PAIRS)
    train_sentencepiece(pairs, CACHE / "tokenizer", TokenizerConfig(vocab_size=VOCAB))
    tok = Tokenizer.from_dir(CACHE / "tokenizer")
    tokenized = TokenizedPairs.from_lists(tok.encode_batch([s for s, _ in pairs]),
                                          tok.encode_batch([t for _, t in pairs]))
    np.savez(CACHE / "pairs.npz", **{k: getattr(tokenized, k) for k in tokenized.__dataclass_fields__})


def load_pairs() -> TokenizedPairs:
    data = np.load(CACHE / "pairs.npz")
    return TokenizedPairs(**{k: data[k] for k in data.files})


def our_trainer(pairs: TokenizedPairs):
    from s2s_core.training.config import resolve
    from s2s_core.training.setup import build_trainer

    train, model = resolve({"preset": "transformer-small", "max_steps": 100_000, "seed": 1,
                            "optim": {"lr": LR}, "schedule": {"warmup_steps": 100},
                            "batching": {"max_tokens": MAX_TOKENS},
                            "model": {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB}})
    return build_trainer(pairs, train, model, torch.device("cpu"))


def run_ours(pairs: TokenizedPairs, steps: int, warmup: int) -> dict:
    trainer = our_trainer(pairs)
    for _ in range(warmup):
        trainer.train_step()
    tokens = padded = 0
    start = time.perf_counter()
    for _ in range(steps):
        record = trainer.train_step()
        step_tokens = record["tokens_per_s"] * record["seconds_per_step"]
        tokens += step_tokens
        padded += step_tokens / (1 - record["padding"])
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "padded": padded,
            "params": sum(p.numel() for p in trainer.module.parameters())}


def marian(vocab: int):
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(vocab_size=vocab, d_model=256, encoder_layers=3, decoder_layers=3,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
                          decoder_ffn_dim=1024, activation_function="relu", dropout=0.1, attention_dropout=0.0,
                          activation_dropout=0.0, max_position_embeddings=512, scale_embedding=True,
                          pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=BOS_ID,
                          share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    torch.manual_seed(1)
    return MarianMTModel(config)


def batch_plans(pairs: TokenizedPairs, kind: str, count: int) -> list[np.ndarray]:
    trainer = our_trainer(pairs)  # the exact batches `ours` trains on
    ours = [trainer.stream.rows(p) for p in range(count)]
    if kind == "hf-ours":
        return ours
    # Shuffled rows within the trainer's length limits, packed in order under the same budget
    # (rows x longest side <= MAX_TOKENS): same memory per step, no length bucketing.
    order = np.random.default_rng(1).permutation(usable_rows(pairs, 256, 256))
    longest = np.maximum(pairs.src_lengths[order], pairs.tgt_lengths[order]) + 1  # + EOS/BOS
    batches, start, width = [], 0, 0
    for i, length in enumerate(longest):
        width = max(width, length)
        if (i + 1 - start) * width > MAX_TOKENS:
            batches.append(order[start:i])
            start, width = i, length
        if len(batches) == count:
            return batches
    return batches


def run_hf(pairs: TokenizedPairs, kind: str, steps: int, warmup: int) -> dict:
    model = marian(VOCAB).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    plans = batch_plans(pairs, kind, warmup + steps)
    tokens = padded = 0
    start = 0.0
    for i, rows in enumerate(plans):
        if i == warmup:
            start, tokens, padded = time.perf_counter(), 0, 0
        batch = make_batch(pairs, rows)
        labels = batch.target.masked_fill(batch.target == PAD_ID, -100)
        logits = model(input_ids=batch.src, attention_mask=batch.src.ne(PAD_ID).long(),
                       decoder_input_ids=batch.prev, decoder_attention_mask=batch.prev.ne(PAD_ID).long()).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                                                 ignore_index=-100, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch.source_tokens + batch.target_tokens
        padded += batch.padded_tokens
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "padded": padded,
            "params": sum(p.numel() for p in model.parameters())}


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9


def child(row: str, steps: int, warmup: int, threads: int) -> None:
    torch.set_num_threads(threads)
    pairs = load_pairs()
    result = run_ours(pairs, steps, warmup) if row == "ours" else run_hf(pairs, row, steps, warmup)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def table(results: dict[str, dict], steps: int, threads: int, gflops: float) -> str:
    base = results["hf-usual"]["tokens"] / results["hf-usual"]["seconds"]
    lines = [f"transformer-small ({results['ours']['params']:,} parameters), {steps} timed steps, "
             f"fp32 CPU, {threads} threads; matmul ceiling {gflops:.0f} GFLOP/s",
             "", "| trainer | tokens/s | s/step | padding | peak RSS | vs HF usual |", "|---|---:|---:|---:|---:|---:|"]
    for row in ROWS:
        r = results[row]
        rate = r["tokens"] / r["seconds"]
        lines.append(f"| {TITLES[row]} | {rate:,.0f} | {r['seconds'] / steps:.3f} | {1 - r['tokens'] / r['padded']:.1%} "
                     f"| {r['peak_rss_mb']:,.0f} MB | {rate / base:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # internal: one row, in a child
    args = parser.parse_args()
    if args.row:
        child(args.row, args.steps, args.warmup, args.threads)
        return
    prepare(args.corpus)
    torch.set_num_threads(args.threads)
    gflops = matmul_gflops()
    results = {}
    for row in ROWS:
        print(f"running {TITLES[row]} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--row", row, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True)
        results[row] = json.loads(out.stdout.strip().splitlines()[-1])
    text = table(results, args.steps, args.threads, gflops)
    (OUT / "train_throughput.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
