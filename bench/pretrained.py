"""Pretrained checkpoints, speed: an imported Marian checkpoint of OPUS-MT size on our torch engine
against Hugging Face `generate` and CTranslate2 on the original checkpoint, in one run.

The checkpoint (built once, cached under bench/out/pretrained-model/, `--rebuild` to redo): OPUS-MT
en-de's shapes (d_model 512, 6+6 layers, 8 heads, FFN 2048, swish, static sinusoidal positions,
shared + tied embeddings, vocabulary 58,101 with PAD last as decoder start, EOS 0, forced EOS);
SentencePiece unigram trained on a sample of /work/shared/data/en-it/train.tsv (both sides; as
many pieces as it allows, up to the vocabulary), vocab.json padded with dummy pieces to 58,101 rows;
random weights from torch.manual_seed; `save_pretrained` -> hf/, `s2s import` (import_checkpoint)
-> package/, CTranslate2's TransformersConverter on hf/ -> ct2-float32/, ct2-int8/.

Rows (each engine in its own subprocess, loaded once; `--threads` threads each):
  HF            MarianMTModel.generate on hf/: num_beams 4, early_stopping=True, length_penalty,
                max_length = start + N + forced EOS, bad_words_ids [[PAD]] (OPUS-MT's config).
  ours f32/int8 Translator(load_package(package/), engine torch, compute_type float32 / int8):
                beam 4, length_normalization power, limit_ending forced-eos, max_len_b = max_length = N.
  CT2 f32/int8  ctranslate2.Translator on its own conversion of hf/: beam 4, 1 x threads,
                max_decoding_length N + 1 (no forced EOS: the (N+1)th token stands in for it, so
                every engine runs N + 1 decoder steps on a sentence that reaches the limit, and at
                most N tokens are counted).
  CT2 f32/int8  the same ctranslate2.Translator calls on `s2s export` of the imported package
  (s2s export)  (oursct2-float32/, oursct2-int8/, exported afresh each run): the export's speed
                beside CTranslate2's own conversion of the same checkpoint (target: within 5%).

Text in, text out for every engine (tokenization and detokenization timed too): the first
--sentences sources of /work/shared/data/en-it/test.tsv, in file order, in the same consecutive
batches of 16 and 64 for every engine. Random weights never choose EOS, so nearly every output
runs to the limit N (--new-tokens, 64): "mean out" shows that every engine did the same work, and
"same as HF" how many outputs equal HF's (a check that the searches agree, float noise aside).

Target tokens/s: generated tokens (no EOS, no padding) per second of the timed calls. The parent
runs the engines batch by batch in a rotating order (after one untimed warm-up call each), so that
background load falls on every engine alike, waiting briefly for a quiet machine before each call
(bench/generate.py's timed_call; no retries by default: one call takes a minute or more). Peak RSS:
the worker's VmHWM, reset before each call (/proc/self/clear_refs), largest over a cell's calls.

Usage: .venv/bin/python bench/pretrained.py [--sentences 256] [--threads 2] [--batches 16,64]
       [--new-tokens 64] [--rebuild]     -> prints the table, writes bench/out/pretrained.{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Sibling scripts, not a package: `python bench/pretrained.py` puts bench/ on sys.path.
from generate import WAITED, JsonLineProcess, load_average, timed_call
from generate_engines import cpu_busy_seconds, peak_rss_mb
from pretrained_checkpoint import BEAMS, DATA, MODEL_DIR, OUT, SEED, VOCAB, build, ensure_built, export_ours

ENGINES = {"hf": "HF generate", "ours-float32": "ours torch f32", "ours-int8": "ours torch int8",
           "ct2-float32": "CT2 f32 (HF conversion)", "ct2-int8": "CT2 int8 (HF conversion)",
           "oursct2-float32": "CT2 f32 (`s2s export`)", "oursct2-int8": "CT2 int8 (`s2s export`)"}
EXPORT_TARGET = 0.05  # CTranslate2 on our export: at most 5% slower than on its own conversion
WARM_UP = 4  # sentences of each engine's untimed first call (lazy initialisation)
TARGET_HF = 1.6  # ours torch f32 / HF
ANCHOR = {"hf": 147, "ct2-float32": 525, "ct2-int8": 696}  # CTranslate2 README, OPUS-MT en-de, 4 threads


# --- workers: one engine each ---------------------------------------------------------------------


def sources(count: int) -> list[str]:
    """The first `count` non-empty English sources of test.tsv, in file order."""
    rows = [line.split("\t")[0].strip() for line in (DATA / "test.tsv").read_text(encoding="utf-8").splitlines()]
    texts = [text for text in rows if text]
    if len(texts) < count:
        raise SystemExit(f"--sentences must be <= {len(texts)}, but is {count}")
    return texts[:count]


def hf_engine(threads: int, new_tokens: int, penalty: float):
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    torch.set_num_threads(threads)
    model = MarianMTModel.from_pretrained(MODEL_DIR / "hf").eval()
    tokenizer = MarianTokenizer.from_pretrained(MODEL_DIR / "hf")
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def run(texts: list[str]) -> tuple[list[str], int]:
        inputs = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**inputs, num_beams=BEAMS, do_sample=False, early_stopping=True,
                                 length_penalty=penalty, max_length=new_tokens + 2, bad_words_ids=[[pad]])
        new = out[:, 1:]  # after the decoder start
        tokens = int(((new != pad) & (new != eos)).sum())
        return tokenizer.batch_decode(new, skip_special_tokens=True), tokens

    return run


def ours_engine(threads: int, new_tokens: int, penalty: float, compute_type: str):
    import torch

    from s2s_core.generation import GenerationConfig, Translator
    from s2s_core.package import load_package

    torch.set_num_threads(threads)  # the torch engine leaves threads to the caller
    config = GenerationConfig(beam_size=BEAMS, length_penalty=penalty, length_normalization="power",
                              limit_ending="forced-eos", max_len_a=0.0, max_len_b=new_tokens, max_length=new_tokens,
                              engine="torch", compute_type=compute_type, max_tokens=64 * 512)
    translator = Translator(load_package(MODEL_DIR / "package"), config, threads=threads)

    def run(texts: list[str]) -> tuple[list[str], int]:
        results = translator(texts)
        return [r.text for r in results], sum(r.tokens for r in results)

    return run


def ct2_engine(threads: int, new_tokens: int, penalty: float, compute_type: str, converted_by: str = "ct2"):
    """`converted_by`: ct2 (CTranslate2's TransformersConverter) or oursct2 (`s2s export`); both
    write the checkpoint's own vocabulary, so the same tokens go in."""
    import ctranslate2
    import sentencepiece as spm

    translator = ctranslate2.Translator(str(MODEL_DIR / f"{converted_by}-{compute_type}"), device="cpu",
                                        compute_type=compute_type, inter_threads=1, intra_threads=threads)
    source = spm.SentencePieceProcessor(model_file=str(MODEL_DIR / "hf" / "source.spm"))
    target = spm.SentencePieceProcessor(model_file=str(MODEL_DIR / "hf" / "target.spm"))

    def run(texts: list[str]) -> tuple[list[str], int]:
        tokens = [pieces + ["</s>"] for pieces in source.encode(texts, out_type=str)]  # as MarianTokenizer
        results = translator.translate_batch(tokens, beam_size=BEAMS, length_penalty=penalty, num_hypotheses=1,
                                             max_decoding_length=new_tokens + 1)
        outputs = [r.hypotheses[0][:new_tokens] for r in results]  # the (N+1)th token stands in for EOS
        return [target.decode_pieces(o) for o in outputs], sum(len(o) for o in outputs)

    return run


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    """One engine, loaded once; translates one batch per request line ({"batch", "index"}) and
    answers one JSON line (wall, own CPU, machine busy CPU seconds, tokens, texts, peak RSS)."""
    engine, texts = args.worker, sources(args.sentences)
    make = {"hf": hf_engine, "ours": ours_engine, "ct2": ct2_engine, "oursct2": ct2_engine}[engine.split("-")[0]]
    extra = [engine.split("-")[1]] if "-" in engine else []
    extra += ["oursct2"] if engine.startswith("oursct2-") else []
    run = make(args.threads, args.new_tokens, args.length_penalty, *extra)
    reply, sys.stdout = sys.stdout, sys.stderr  # libraries' prints must not reach the protocol channel
    reply.write(json.dumps({"ready": True, "load_peak_mb": peak_rss_mb(), "loaded_mb": rss_mb()}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        batch = texts[request["index"] * request["batch"]:(request["index"] + 1) * request["batch"]]
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS: this call's peak only
        busy, cpu, start = cpu_busy_seconds(), time.process_time(), time.perf_counter()
        outputs, tokens = run(batch)
        wall = time.perf_counter() - start
        reply.write(json.dumps({"seconds": wall, "cpu": time.process_time() - cpu, "busy": cpu_busy_seconds() - busy,
                                "tokens": tokens, "sentences": len(batch), "texts": outputs,
                                "peak_rss_mb": peak_rss_mb()}) + "\n")
        reply.flush()


# --- parent: drive the workers, tabulate ----------------------------------------------------------


class Worker(JsonLineProcess):
    """A running `--worker ENGINE` subprocess."""

    def __init__(self, engine: str, args: argparse.Namespace) -> None:
        print(f"loading {engine} ...", file=sys.stderr, flush=True)
        super().__init__(engine, [sys.executable, __file__, "--worker", engine, "--sentences", str(args.sentences),
                                  "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
                                  "--length-penalty", str(args.length_penalty)])
        self.info = self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure(args: argparse.Namespace) -> dict:
    """Per engine and batch size: every batch of the sentences, the engines in a rotating order
    batch by batch (one untimed warm-up call each first, on the first WARM_UP sentences)."""
    workers = [Worker(engine, args) for engine in ENGINES]
    cells: dict = {w.engine: {"info": w.info} for w in workers}
    try:
        for w in workers:
            w.call({"batch": WARM_UP, "index": 0})
        for batch in args.batches:
            calls: dict[str, list[dict]] = {w.engine: [] for w in workers}
            rounds = -(-args.sentences // batch)
            for index in range(rounds):
                turn = index % len(workers)
                for w in workers[turn:] + workers[:turn]:
                    calls[w.engine].append(timed_call(w, {"batch": batch, "index": index}, args))
                print(f"  batch {batch}: round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
            for engine, done in calls.items():
                cells[engine][batch] = summarize(done, calls["hf"])
                if engine.startswith("oursct2-"):  # the same model through both converters: the same texts
                    own = calls[engine.replace("oursct2", "ct2")]
                    cells[engine][batch]["same_as_own_conversion"] = same_texts(done, own) / len(sources(args.sentences))
            print(f"  batch {batch}: " + ", ".join(f"{e} {cells[e][batch]['tokens_per_s']:,.0f}" for e in cells)
                  + " tokens/s", file=sys.stderr, flush=True)
    except BaseException:
        for w in workers:
            w.process.kill()
        raise
    for w in workers:
        w.close()
    return cells


def summarize(done: list[dict], hf: list[dict]) -> dict:
    seconds, tokens = sum(c["seconds"] for c in done), sum(c["tokens"] for c in done)
    sentences = sum(c["sentences"] for c in done)
    same = same_texts(done, hf)
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "sentences": sentences,
            "mean_output_tokens": tokens / sentences, "same_as_hf": same / sentences,
            "peak_rss_mb": max(c["peak_rss_mb"] for c in done),
            "background_cores": statistics.median(c["background"] for c in done),
            "retried": sum(c["retried"] for c in done), "sample": done[0]["texts"][0]}


def same_texts(done: list[dict], other: list[dict]) -> int:
    """How many outputs of two engines' calls on the same batches are the same text."""
    return sum(a == b for c, h in zip(done, other) for a, b in zip(c["texts"], h["texts"]))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def mean_source_tokens(texts: list[str]) -> float:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(MODEL_DIR / "hf" / "source.spm"))
    return statistics.mean(len(ids) + 1 for ids in sp.encode(texts))  # + EOS


def per(cell: dict, batches: list[int], key: str, fmt: str) -> str:
    """One engine's `key` at each batch size, "a / b"."""
    return " / ".join(format(cell[x][key], fmt) for x in batches)


def markdown(cells: dict, built: dict, args: argparse.Namespace, meta: dict) -> str:
    b = args.batches
    head = " | ".join(f"b{x} tokens/s | b{x} vs HF" for x in b)
    lines = [f"## Pretrained checkpoint speed (OPUS-MT size, imported Marian), {meta['date']}", "",
             f"CPU: {meta['cpu']} ({os.cpu_count()} cores), {args.threads} threads per engine; load average at start "
             f"{meta['load']}; {meta['run_s']:.0f} s in all, {WAITED['seconds']:.0f} s of it waiting for a quiet "
             f"machine. {meta['versions']}.",
             f"Model: d_model 512, 6+6 layers, 8 heads, FFN 2048, vocabulary {VOCAB:,} ({built['spm_pieces']:,} "
             f"SentencePiece pieces + {built['dummy_pieces']} dummy), {built['hf_params']:,} parameters, random "
             f"weights (seed {SEED}). Options: beam {BEAMS}, length penalty {args.length_penalty}, at most "
             f"{args.new_tokens} new tokens (+ EOS), early stopping; {args.sentences} en-it test sentences per cell "
             f"(mean {meta['source_tokens']:.1f} source tokens with EOS), text in, text out.", "",
             f"| engine | {head} | mean out tokens | same as HF | peak RSS MB | other load |",
             "|---|" + "---:|" * (2 * len(b) + 4)]
    for engine, title in ENGINES.items():
        c = cells[engine]
        speed = " | ".join(f"{c[x]['tokens_per_s']:,.0f} | {c[x]['tokens_per_s'] / cells['hf'][x]['tokens_per_s']:.2f}x"
                           for x in b)
        lines.append(f"| {title} | {speed} | {per(c, b, 'mean_output_tokens', '.1f')} "
                     f"| {per(c, b, 'same_as_hf', '.0%')} | {per(c, b, 'peak_rss_mb', ',.0f')} "
                     f"| {per(c, b, 'background_cores', '.2f')} |")
    ratios = [cells["ours-float32"][x]["tokens_per_s"] / cells["hf"][x]["tokens_per_s"] for x in b]
    met = all(r >= TARGET_HF for r in ratios)
    exports = {q: [cells[f"oursct2-{q}"][x]["tokens_per_s"] / cells[f"ct2-{q}"][x]["tokens_per_s"] for x in b]
               for q in ("float32", "int8")}
    export_met = all(r >= 1 - EXPORT_TARGET for rs in exports.values() for r in rs)
    lines += ["", f"Target ours torch f32 >= {TARGET_HF}x HF at batch {', '.join(map(str, b))}: "
              f"{'met' if met else '**not met**'} ({', '.join(f'{r:.2f}x' for r in ratios)}).",
              f"Target CTranslate2 on `s2s export` within {EXPORT_TARGET:.0%} of CTranslate2 on its own conversion: "
              f"{'met' if export_met else '**not met**'} (export / own conversion: "
              + "; ".join(f"{q} {', '.join(f'{r:.3f}' for r in rs)}" for q, rs in exports.items())
              + "; same texts as the own conversion: "
              + "; ".join(f"{q} {per(cells[f'oursct2-{q}'], b, 'same_as_own_conversion', '.0%')}" for q in exports)
              + f"; export {built['export_float32_s']:.0f} s f32, {built['export_int8_s']:.0f} s int8).",
              f"Published anchor (CTranslate2 README, OPUS-MT en-de, 4 threads, another CPU): HF {ANCHOR['hf']}, "
              f"CT2 f32 {ANCHOR['ct2-float32']} ({ANCHOR['ct2-float32'] / ANCHOR['hf']:.2f}x), CT2 int8 "
              f"{ANCHOR['ct2-int8']} ({ANCHOR['ct2-int8'] / ANCHOR['hf']:.2f}x) target tokens/s.",
              "", "Columns with two values are per batch size (" + " / ".join(map(str, b)) + "). Peak RSS: the "
              "engine process's largest resident set during a call (model, libraries and search). Other load: "
              "cores other processes kept busy during the engine's calls (median). CT2 runs 1 x threads "
              "(inter x intra) and decodes N + 1 tokens, counting N (it has no forced EOS)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=256, help="sentences per cell")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="16,64", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=64, help="most tokens generated per sentence (+ EOS)")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached checkpoint")
    parser.add_argument("--max-background", type=float, default=0.25,
                        help="cores other processes may keep busy during a timed call before it is retried")
    # A call here takes a minute or more: retrying one under load costs more than it buys, and the
    # engines' calls alternate batch by batch, so background load falls on all of them alike.
    parser.add_argument("--retries", type=int, default=0, help="extra attempts of a timed call under load")
    parser.add_argument("--max-wait", type=float, default=2.0, help="seconds to wait for quiet before a call")
    parser.add_argument("--wait-budget", type=float, default=60.0, help="seconds of waiting for quiet in all")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = [int(x) for x in str(args.batches).split(",")]
    if args.build_only:
        return build(MODEL_DIR)
    if args.export_only:
        return export_ours(MODEL_DIR)
    if args.worker:
        return worker(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill the workers on the way out
    started, load = time.perf_counter(), load_average()
    OUT.mkdir(parents=True, exist_ok=True)
    built = ensure_built(args.rebuild)
    if built["ours_export"] != "exported":
        raise SystemExit(f"`s2s export` of the imported package failed: {built['ours_export']}")
    cells = measure(args)
    import ctranslate2
    import torch
    import transformers

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "load": load, "run_s": time.perf_counter() - started,
            "source_tokens": mean_source_tokens(sources(args.sentences)),
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                        f"ctranslate2 {ctranslate2.__version__}"}
    text = markdown(cells, built, args, meta)
    (OUT / "pretrained.md").write_text(text)
    # WAITED["retries"]: calls over --max-background (generate.timed_call counts them even with --retries 0).
    (OUT / "pretrained.json").write_text(json.dumps(
        {"meta": meta, "build": built, "options": {k: v for k, v in vars(args).items() if k not in ("worker",)},
         "waited_s": WAITED["seconds"], "calls_over_load_limit": WAITED["retries"],
         "cells": {e: {str(k): v for k, v in c.items()} for e, c in cells.items()}}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
