"""--export-only of bench/generate.py: our export (`s2s export`) on CTranslate2 against CTranslate2 on
the converted HF model of the same size, thread split by thread split.

Both are the same engine on the same shapes. Both models live in one process, and each call times
the two back to back: the speed of a process varies more from one process to the next than the
gap we measure (see generate_engines.pair_engine). The measure is the median over calls of the
ratio of the two, in two processes that load the models in opposite orders.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from generate_engines import MODES, NEW_TOKENS, SIZES, dims

TARGET_EXPORT = 0.95  # our export on CTranslate2 vs CTranslate2 on the converted HF model, same compute type


def tabulate_export(size: str, runs: dict[str, dict], args: argparse.Namespace) -> dict:
    """--export-only: our export against the converted HF model, cell by cell, at each thread
    split, from the pair engines (both models in one process, each load order in its own)."""
    rows = []
    for mode in MODES:
        for batch in args.batches:
            cell = f"{mode}/{batch}"
            for pair in sorted({name.rsplit("-", 1)[0] for name in runs}):  # pair-<type>-<split>
                _, compute_type, split = pair.split("-")
                by_order = {first: runs[f"{pair}-{first}"]["cells"][cell] for first in ("theirs", "ours")}
                # tokens/s ratio of one call = their seconds / our seconds (same sentences, same process)
                ratios = {first: [c["ct2"] / c["oursct2"] for c in done["per_model"]]
                          for first, done in by_order.items()}
                seconds = {model: [c[model] for done in by_order.values() for c in done["per_model"]]
                           for model in ("ct2", "oursct2")}
                tokens = by_order["theirs"]["sentences"] * NEW_TOKENS
                rows.append({"mode": mode, "batch": batch, "compute_type": compute_type, "threads": split,
                             "ct2": tokens / statistics.median(seconds["ct2"]),
                             "oursct2": tokens / statistics.median(seconds["oursct2"]),
                             "theirs_loaded_first": statistics.median(ratios["theirs"]),
                             "ours_loaded_first": statistics.median(ratios["ours"]),
                             "median_round_ratio": statistics.median(ratios["theirs"] + ratios["ours"]),
                             "round_ratios": ratios, "seconds": seconds,
                             "background_cores": max(d["background_cores"] for d in by_order.values())})
    return {"size": SIZES[size], "dims": dims(size), "rows": rows}


def write_export(results: list[dict], args: argparse.Namespace, seconds: float, load: str, out: Path) -> None:
    """The --export-only table: markdown to stdout and `out`/generate-export.md, data to generate-export.json."""
    lines = [f"Our export (`s2s export`) against CTranslate2 on the converted HF model of the same size: the same "
             f"engine, inputs and 26 decoder steps; {args.threads} threads as inter x intra. Both models in one "
             f"process, timed back to back in each call (which goes first alternates); per compute type and thread "
             f"split, two processes that load them in opposite orders, {args.repeats} calls each; load average at "
             f"start {load}; {seconds:.0f} s in all.", ""]
    all_ratios = []
    for result in results:
        lines += [f"### {result['size']}", "",
                  "| mode | batch | type | threads | CT2 (HF model) tokens/s | ours on CT2 tokens/s | ratio, HF model "
                  "loaded first | ratio, ours loaded first | ratio, both | other load |",
                  "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["rows"]:
            all_ratios.append(r["median_round_ratio"])
            lines.append(f"| {r['mode']} | {r['batch']} | {r['compute_type']} | {r['threads']} | {r['ct2']:,.0f} "
                         f"| {r['oursct2']:,.0f} | {r['theirs_loaded_first']:.2f}x | {r['ours_loaded_first']:.2f}x "
                         f"| **{r['median_round_ratio']:.2f}x** "
                         f"| {r['background_cores']:.2f} |")
        lines.append("")
    lines.append(f"Median over all {len(all_ratios)} cells of the ratio (both orders): {statistics.median(all_ratios):.3f}x "
                 f"(lowest {min(all_ratios):.2f}x, highest {max(all_ratios):.2f}x; target >= {TARGET_EXPORT}x).")
    text = "\n".join(lines) + "\n"
    (out / "generate-export.md").write_text(text)
    (out / "generate-export.json").write_text(json.dumps({"repeats": args.repeats, "threads": args.threads,
                                                         "load_average_start": load, "sizes": results}, indent=2))
    print(text)
