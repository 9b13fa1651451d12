"""The engines of bench/generate.py, each run in its own child process: ours, Hugging Face
Marian and CTranslate2 over the same random model dimensions and sources (see generate.py's
docstring for what is measured and how).

Run by generate.py as `python bench/generate_engines.py --engine NAME --size SIZE ...`: the child
loads one engine, answers {"ready"} on stdout, then times one call per JSON request line on
stdin and answers one JSON line per call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

VOCAB = 32_000
NEW_TOKENS = 25  # target tokens per sentence; every engine decodes one more step (EOS)
SOURCE_LENGTHS = (21, 29)  # ids per source, EOS included (inclusive range, mean 25)
SEED = 1
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3  # s2s_core.tokenizer; sources use ids >= 4
MODES = {"greedy": 1, "beam4": 4}
SIZES = {"small": "transformer-small", "base": "transformer-base"}


def dims(size: str) -> dict:
    from s2s_core.models import model_config

    c = model_config(SIZES[size], {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB})
    return {"d_model": c.d_model, "heads": c.heads, "encoder_layers": c.encoder_layers,
            "decoder_layers": c.decoder_layers, "ffn_dim": c.ffn_dim, "max_positions": c.max_positions,
            "norm": c.norm, "activation": c.activation}


def sources(count: int) -> list[list[int]]:
    """`count` fixed random sources: ids in [4, VOCAB), EOS last, 21-29 ids in all."""
    rng = np.random.default_rng(SEED)
    lengths = rng.integers(SOURCE_LENGTHS[0], SOURCE_LENGTHS[1] + 1, size=count)
    return [rng.integers(4, VOCAB, size=n - 1).tolist() + [EOS_ID] for n in lengths]


def padded(rows: list[list[int]], pad: int):
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def batches_for(batch: int, batch1_sentences: int) -> list[list[list[int]]]:
    """The source batches of one timed call: one batch of `batch`, or single sentences in a row."""
    if batch == 1:
        return [[s] for s in sources(batch1_sentences)]
    return [sources(batch)]


def token_names() -> list[str]:
    """The CTranslate2/HF tokenizer vocabulary: our special ids 0-3, `t<id>` for the rest, and
    Marian's decoder-start `<pad>` last (id VOCAB), which the converter drops again."""
    return ["<blank>", "<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(4, VOCAB)] + ["<pad>"]


def marian_config(size: str):
    from transformers import MarianConfig

    d = dims(size)
    # Marian's convention: the pad token is the last id and starts the decoder (zero embedding);
    # so the HF model has VOCAB + 1 rows and the converted CTranslate2 model exactly VOCAB.
    return MarianConfig(vocab_size=VOCAB + 1, d_model=d["d_model"], encoder_layers=d["encoder_layers"],
                        decoder_layers=d["decoder_layers"], encoder_attention_heads=d["heads"],
                        decoder_attention_heads=d["heads"], encoder_ffn_dim=d["ffn_dim"], decoder_ffn_dim=d["ffn_dim"],
                        activation_function=d["activation"], dropout=0.1, attention_dropout=0.0,
                        activation_dropout=0.0, max_position_embeddings=d["max_positions"], scale_embedding=True,
                        pad_token_id=VOCAB, eos_token_id=EOS_ID, decoder_start_token_id=VOCAB,
                        bos_token_id=BOS_ID, share_encoder_decoder_embeddings=True, tie_word_embeddings=True)


def prepare(size: str, workdir: Path) -> None:
    """HF Marian with seeded random weights and a word-level tokenizer saved under workdir/hf,
    converted to workdir/ct2-float32 and workdir/ct2-int8."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import MarianMTModel, PreTrainedTokenizerFast

    torch.manual_seed(SEED)
    model = MarianMTModel(marian_config(size))
    model.save_pretrained(workdir / "hf")
    names = token_names()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>")),
        unk_token="<unk>", eos_token="</s>", pad_token="<pad>", bos_token="<s>")
    tokenizer.save_pretrained(workdir / "hf")
    for quantization in ("float32", "int8"):
        TransformersConverter(str(workdir / "hf")).convert(
            str(workdir / f"ct2-{quantization}"), quantization=None if quantization == "float32" else quantization,
            force=True)
    vocab = json.loads((workdir / "ct2-float32" / "shared_vocabulary.json").read_text())
    if vocab != names[:-1]:
        raise RuntimeError(f"converted vocabulary differs from ours ({len(vocab)} tokens)")
    # Our own model (the "ours" row's weights), exported by our converter (s2s export's code path).
    from s2s_core.export.ct2 import convert_transformer

    model, config = ours_model(size)
    for quantization in ("float32", "int8"):
        convert_transformer(model, config, names[:-1], names[:-1], workdir / f"oursct2-{quantization}", quantization)


def sentence_flops(size: str, beams: int, source_tokens: float) -> float:
    """Matmul FLOPs of one sentence: encoder, cross K/V once, NEW_TOKENS + 1 decoder steps x beams."""
    d = dims(size)
    dm, ff = d["d_model"], d["ffn_dim"]
    encoder = source_tokens * d["encoder_layers"] * 2 * (4 * dm * dm + 2 * dm * ff)
    cross_kv = source_tokens * d["decoder_layers"] * 2 * 2 * dm * dm
    step = d["decoder_layers"] * 2 * (6 * dm * dm + 2 * dm * ff) + 2 * dm * VOCAB
    return encoder + cross_kv + (NEW_TOKENS + 1) * beams * step


def ours_model(size: str):
    """(model, config): our Transformer of `size` with the seeded random weights every "ours" row uses."""
    import torch

    from s2s_core.models import build_model, model_config

    torch.manual_seed(SEED)
    config = model_config(SIZES[size], {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB})
    return build_model(config).eval(), config


def ours_engine(size: str, threads: int, int8: bool = False):
    import torch

    from s2s_core.generation import GenerationConfig, Generator
    from s2s_core.models.inference import pack_for_cpu_inference, quantize_for_cpu_inference

    torch.set_num_threads(threads)
    model, _ = ours_model(size)
    params = sum(p.numel() for p in model.parameters())
    # What the torch engine does on the CPU: oneDNN-packed float32, or int8 dynamic quantization.
    (quantize_for_cpu_inference if int8 else pack_for_cpu_inference)(model)

    def run(mode: str, batches: list) -> None:
        generator = Generator(model, GenerationConfig(
            beam_size=MODES[mode], min_length=NEW_TOKENS, max_length=NEW_TOKENS, max_len_a=0,
            max_len_b=NEW_TOKENS, length_penalty=1.0, nbest=1))
        results = []
        for rows in batches:
            results += generator.generate(padded(rows, PAD_ID))
        lengths = {len(h.tokens) for hyps in results for h in hyps}
        if lengths != {NEW_TOKENS} or any(len(hyps) != 1 for hyps in results):
            raise RuntimeError(f"ours: output lengths {lengths}, expected {NEW_TOKENS} (+ EOS)")

    return run, {"params": params}


def hf_engine(size: str, threads: int, workdir: Path):
    import torch
    from transformers import GenerationConfig, MarianMTModel

    torch.set_num_threads(threads)
    model = MarianMTModel.from_pretrained(workdir / "hf").eval()

    def run(mode: str, batches: list) -> None:
        config = GenerationConfig(num_beams=MODES[mode], do_sample=False, min_new_tokens=NEW_TOKENS,
                                  max_new_tokens=NEW_TOKENS + 1, forced_eos_token_id=EOS_ID,
                                  eos_token_id=EOS_ID, pad_token_id=VOCAB, decoder_start_token_id=VOCAB,
                                  length_penalty=1.0, num_return_sequences=1, use_cache=True)
        for rows in batches:
            ids = padded(rows, VOCAB)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=ids.ne(VOCAB).long(), generation_config=config)
            new = out[:, 1:]  # after the decoder-start token
            if (new.shape[1] != NEW_TOKENS + 1 or not bool((new[:, -1] == EOS_ID).all())
                    or bool((new[:, :-1] == EOS_ID).any())):
                raise RuntimeError(f"HF: output shape {tuple(out.shape)}, expected {NEW_TOKENS} tokens + EOS")

    return run, {"params": sum(p.numel() for p in model.parameters())}


def ct2_engine(workdir: Path, compute_type: str, inter: int, intra: int, model_dir: str = "ct2"):
    """CTranslate2 on the converted HF model (model_dir "ct2") or on our export ("oursct2")."""
    import ctranslate2

    translator = ctranslate2.Translator(str(workdir / f"{model_dir}-{compute_type}"), device="cpu",
                                        compute_type=compute_type,
                                        inter_threads=inter, intra_threads=intra)
    names = token_names()

    def run(mode: str, batches: list) -> None:
        for rows in batches:
            tokens = [[names[i] for i in r] for r in rows]
            results = translator.translate_batch(
                tokens, beam_size=MODES[mode], num_hypotheses=1, max_batch_size=-(-len(rows) // inter),
                min_decoding_length=NEW_TOKENS + 1, max_decoding_length=NEW_TOKENS + 1, return_end_token=True)
            lengths = {len(r.hypotheses[0]) for r in results}
            if lengths != {NEW_TOKENS + 1} or any("</s>" in r.hypotheses[0] for r in results):
                raise RuntimeError(f"CT2: output lengths {lengths}, expected {NEW_TOKENS + 1} without EOS")

    return run, {"inter_threads": inter, "intra_threads": intra}


def pair_engine(workdir: Path, compute_type: str, inter: int, intra: int, first: str):
    """Both CTranslate2 models in one process, loaded in the order `first` says ("ours" or
    "theirs"), each call timing the two back to back, which one goes first alternating.

    For --export-only: the speed of one process running the same model varies by up to 1.6x
    from process to process on a 2-core VM (measured 2026-12-02), far more than the gap being
    measured, and the model loaded first ran a few % slower in its process. One process per
    model turns that luck into a false gap; a pair in one process, run in both load orders,
    cancels it."""
    order = ["oursct2", "ct2"] if first == "ours" else ["ct2", "oursct2"]
    runs = {model: ct2_engine(workdir, compute_type, inter, intra, model)[0] for model in order}
    calls = [0]

    def run(mode: str, batches: list) -> dict[str, float]:
        seconds = {}
        for model in (order if calls[0] % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            runs[model](mode, batches)
            seconds[model] = time.perf_counter() - start
        calls[0] += 1
        return seconds

    return run, {"inter_threads": inter, "intra_threads": intra, "loaded_first": order[0]}


def cpu_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat), all processes."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    """One engine, loaded once; times one call per request line ({"mode", "batch"}) on stdin and
    answers one JSON line: wall seconds, its own CPU seconds, the machine's busy CPU seconds."""
    engine, workdir = args.engine, Path(args.workdir) if args.workdir else None
    if engine in ("ours", "ours-int8"):
        run, info = ours_engine(args.size, args.threads, int8=engine == "ours-int8")
    elif engine == "hf":
        run, info = hf_engine(args.size, args.threads, workdir)
    elif engine.startswith("pair-"):  # pair-<type>-<inter>x<intra>-<ours|theirs>: see pair_engine
        _, compute_type, split, first = engine.split("-")
        inter, intra = (int(x) for x in split.split("x"))
        run, info = pair_engine(workdir, compute_type, inter, intra, first)
    else:  # ct2-<type>-<inter>x<intra> (converted HF model) or oursct2-<type>-<inter>x<intra> (our export)
        model_dir, compute_type, split = engine.split("-")
        inter, intra = (int(x) for x in split.split("x"))
        run, info = ct2_engine(workdir, compute_type, inter, intra, model_dir)
    reply = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not reach the protocol channel
    reply.write(json.dumps({"ready": True, "info": info}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            reply.write(json.dumps({"peak_rss_mb": peak_rss_mb()}) + "\n")
            reply.flush()
            return
        batches = batches_for(request["batch"], args.batch1_sentences)
        busy, cpu, start = cpu_busy_seconds(), time.process_time(), time.perf_counter()
        per_model = run(request["mode"], batches)  # a pair engine's seconds by model, else None
        wall = time.perf_counter() - start
        reply.write(json.dumps({"seconds": wall, "cpu": time.process_time() - cpu,
                                "busy": cpu_busy_seconds() - busy, "per_model": per_model,
                                "sentences": sum(len(b) for b in batches)}) + "\n")
        reply.flush()


def profile(threads: int) -> str:
    """torch.profiler and cProfile of one transformer-base, beam 4, batch 64 call of ours."""
    import cProfile
    import io
    import pstats

    import torch

    run, _ = ours_engine("base", threads)
    batches = batches_for(64, 1)
    run("beam4", batches)
    start = time.perf_counter()
    run("beam4", batches)
    plain = time.perf_counter() - start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run("beam4", batches)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    stats_out = io.StringIO()
    profiler = cProfile.Profile()
    profiler.enable()
    run("beam4", batches)
    profiler.disable()
    pstats.Stats(profiler, stream=stats_out).sort_stats("cumulative").print_stats(30)
    return (f"ours, transformer-base, beam 4, batch 64, {threads} threads: {plain:.2f} s per call "
            f"({64 * NEW_TOKENS / plain:,.0f} tokens/s) without profiler\n\n"
            f"torch.profiler (self CPU time):\n{table}\n\ncProfile (cumulative):\n{stats_out.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description="one generation engine, driven over stdin/stdout")
    parser.add_argument("--engine", required=True,
                        help="ours, ours-int8, hf, ct2|oursct2-<float32|int8>-<inter>x<intra>, or "
                             "pair-<float32|int8>-<inter>x<intra>-<ours|theirs> (both, `theirs` loaded first or not)")
    parser.add_argument("--size", required=True, choices=sorted(SIZES))
    parser.add_argument("--workdir", help="where generate.py's prepare() saved the HF and CT2 models")
    parser.add_argument("--batch1-sentences", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    worker(parser.parse_args())


if __name__ == "__main__":
    main()
