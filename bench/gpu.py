"""GPU figures: training transformer-base in bf16, and translation with the torch and CTranslate2
engines, on real en-it data. Run on a GPU machine:

    .venv/bin/python bench/gpu.py                      # transformer-base, 300 steps, 20,000 sentences
    .venv/bin/python bench/gpu.py --device cpu --preset transformer-tiny --train-steps 5 --sentences 64
                                                       # a smoke run of this script on a CPU

1. matmul ceiling: best of 5 timed (8192 x 8192) @ (8192 x 8192) products in bf16 (float32 on a CPU):
   the rate MFU is measured against.
2. training: s2s_core's Trainer, what `s2s train` runs in each worker, on the first 200,000 pairs of
   ../shared/data/en-it/train.tsv (8k SentencePiece), length-bucketed batches of --max-tokens,
   bf16 autocast on CUDA (the trainer's default there). After --warmup untimed steps, --train-steps
   timed ones: tokens/s (non-padding source + target), peak GPU memory (torch's allocator), and
   MFU = model FLOPs / time / matmul ceiling, model FLOPs = 3 x the forward matmuls of the real
   tokens (embedding lookups and softmax left out; attention scores counted at the mean lengths).
3. translation: the trained weights as a model package (exported with our converter), --sentences
   real sentences (the tail of train.tsv, never trained on), beam 4, every output forced to 25
   tokens (min = max length) so every engine does the same work; the bare Translator with
   engine=torch (float32) and engine=ctranslate2 (float16 on CUDA, int8 on a CPU): rows/s, target
   tokens/s, peak device memory (nvidia-smi, polled; the CTranslate2 allocator is not torch's).

Writes bench/out/gpu.md and gpu.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from s2s_core.data.config import TokenizerConfig
from s2s_core.export.ct2 import EXPORT_DIR, export_ctranslate2
from s2s_core.generation import GenerationConfig, Translator
from s2s_core.package import load_package, save_package
from s2s_core.tokenizer import Tokenizer, train_sentencepiece
from s2s_core.training.batching import TokenizedPairs

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data" / "en-it" / "train.tsv"
OUT = REPO / "bench" / "out"
TRAIN_PAIRS, VOCAB, NEW_TOKENS = 200_000, 8000, 25


def read_lines(limit: int | None = None, tail: int | None = None) -> list[tuple[str, str]]:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    chosen = lines[-tail:] if tail else lines[:limit]
    return [tuple(line.split("\t")[:2]) for line in chosen if line.count("\t") >= 1]  # type: ignore[misc]


def matmul_tflops(device: torch.device) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = 0.0
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = max(best, 2 * size**3 * 10 / (time.perf_counter() - start) / 1e12)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_flops(config, source_tokens: float, target_tokens: float, mean_source: float, mean_target: float) -> float:
    """Forward matmul FLOPs of a batch with these real token counts and mean lengths."""
    d, f, v = config.d_model, config.ffn_dim, config.tgt_vocab_size
    encoder = source_tokens * config.encoder_layers * (2 * (4 * d * d + 2 * d * f) + 4 * mean_source * d)
    cross_kv = source_tokens * config.decoder_layers * 4 * d * d
    decoder = target_tokens * config.decoder_layers * (2 * (6 * d * d + 2 * d * f) + 2 * mean_target * d
                                                       + 4 * mean_source * d)
    return encoder + cross_kv + decoder + target_tokens * 2 * d * v


def train(args: argparse.Namespace, device: torch.device, workdir: Path, ceiling: float) -> tuple[dict, Path]:
    """Train, time, and save the weights as a package for the translation part."""
    from s2s_core.training.config import resolve
    from s2s_core.training.setup import build_trainer

    pairs = read_lines(limit=TRAIN_PAIRS)
    train_sentencepiece(pairs, workdir / "tokenizer", TokenizerConfig(vocab_size=VOCAB))
    tokenizer = Tokenizer.from_dir(workdir / "tokenizer")
    tokenized = TokenizedPairs.from_lists(tokenizer.encode_batch([s for s, _ in pairs]),
                                          tokenizer.encode_batch([t for _, t in pairs]))
    vocab = tokenizer.vocab_size
    train_config, model_config = resolve({
        "preset": args.preset, "max_steps": args.warmup + args.train_steps + 1, "seed": 1,
        "optim": {"lr": 7e-4}, "schedule": {"warmup_steps": 100}, "batching": {"max_tokens": args.max_tokens},
        "model": {"src_vocab_size": vocab, "tgt_vocab_size": vocab}})
    trainer = build_trainer(tokenized, train_config, model_config, device)
    for _ in range(args.warmup):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    records = [trainer.train_step() for _ in range(args.train_steps)]
    seconds = sum(r["seconds_per_step"] for r in records)
    tokens = sum(r["tokens_per_s"] * r["seconds_per_step"] for r in records)
    mean_source = float(tokenized.src_lengths.mean()) + 1
    mean_target = float(tokenized.tgt_lengths.mean()) + 1
    share = mean_source / (mean_source + mean_target)
    flops = 3 * forward_flops(model_config, tokens * share, tokens * (1 - share), mean_source, mean_target)
    result = {"preset": args.preset, "params": sum(p.numel() for p in trainer.module.parameters()),
              "steps": args.train_steps, "max_tokens": args.max_tokens, "tokens_per_s": tokens / seconds,
              "loss": records[-1]["loss"], "mfu": flops / seconds / (ceiling * 1e12),
              "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}
    save_package(workdir / "model", trainer.module.cpu(), model_config, workdir / "tokenizer", {"note": "bench"})
    return result, workdir / "model"


class DevicePeak:
    """Peak used GPU memory (MiB) over a block, polled with nvidia-smi every 0.2 s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.peak, self._stop = enabled, 0.0, threading.Event()

    def __enter__(self) -> "DevicePeak":
        if self.enabled:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.peak = max(self.peak, float(out[0]))
            self._stop.wait(0.2)

    def __exit__(self, *exc) -> None:
        self._stop.set()


def translate(package: Path, device: torch.device, sentences: list[str], engine: str, compute_type: str) -> dict:
    options = GenerationConfig(beam_size=4, max_len_a=0, max_len_b=NEW_TOKENS, min_length=NEW_TOKENS,
                               engine=engine, compute_type=compute_type, max_tokens=8192)
    with DevicePeak(device.type == "cuda") as peak:
        translator = Translator(load_package(package, device), options)
        translator(sentences[:64])  # warm-up
        _sync(device)
        start = time.perf_counter()
        results = translator(sentences)
        _sync(device)
        seconds = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    return {"engine": engine, "compute_type": translator.engine.describe()["compute_type"],
            "rows_per_s": len(sentences) / seconds, "target_tokens_per_s": tokens / seconds,
            "peak_device_memory_mb": peak.peak or None, "seconds": seconds}


def markdown(result: dict) -> str:
    t = result["train"]
    memory = "n/a" if t["peak_memory_gb"] is None else f"{t['peak_memory_gb']:.1f} GB"
    lines = [f"GPU figures, {result['date']}, {result['device_name']} (matmul ceiling {result['ceiling_tflops']:.2f} "
             f"TFLOP/s {'bf16' if result['device'] == 'cuda' else 'fp32'})", "",
             "| training | params | tokens/s | MFU | peak memory |", "|---|---:|---:|---:|---:|",
             f"| {t['preset']}, {t['max_tokens']:,}-token batches, {t['steps']} steps | {t['params']:,} "
             f"| {t['tokens_per_s']:,.0f} | {t['mfu']:.1%} | {memory} |", "",
             f"| translation, {result['sentences']:,} sentences, beam 4, 25 tokens each | rows/s | target tokens/s "
             "| peak device memory |", "|---|---:|---:|---:|"]
    for row in result["translate"]:
        memory = "n/a" if row["peak_device_memory_mb"] is None else f"{row['peak_device_memory_mb']:,.0f} MiB"
        lines.append(f"| engine={row['engine']} ({row['compute_type']}) | {row['rows_per_s']:,.1f} "
                     f"| {row['target_tokens_per_s']:,.0f} | {memory} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="transformer-base")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--sentences", type=int, default=20_000)
    args = parser.parse_args()
    device = torch.device(args.device)
    ceiling = matmul_tflops(device)
    with tempfile.TemporaryDirectory(prefix="s2s-gpu-bench-") as tmp:
        training, package = train(args, device, Path(tmp), ceiling)
        export_ctranslate2(load_package(package), package / EXPORT_DIR)
        sentences = [s for s, _ in read_lines(tail=args.sentences)]
        fast = "float16" if device.type == "cuda" else "int8"
        rows = [translate(package, device, sentences, "torch", "default"),
                translate(package, device, sentences, "ctranslate2", fast)]
    result = {"date": time.strftime("%Y-%m-%d"), "device": device.type, "ceiling_tflops": ceiling,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "sentences": len(sentences), "train": training, "translate": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (OUT / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
