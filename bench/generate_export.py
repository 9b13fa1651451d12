"""--export-only of bench/generate.py: our export (`s2s export`) on CTranslate2 against CTranslate2 on
the converted HF model of the same size, thread split by thread split.

Both are the same engine on the same shapes, so the measure is the median over rounds of the
ratio of the two calls timed back to back in each round: load that comes and goes falls on both.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from generate_engines import MODES, SIZES, dims

TARGET_EXPORT = 0.95  # our export on CTranslate2 vs CTranslate2 on the converted HF model, same compute type


def tabulate_export(size: str, runs: dict[str, dict], args: argparse.Namespace) -> dict:
    """--export-only: our export against the converted HF model, cell by cell, at each thread split."""
    rows = []
    for mode in MODES:
        for batch in args.batches:
            cell = f"{mode}/{batch}"
            for name in sorted(e for e in runs if e.startswith("ct2-")):
                theirs, ours = runs[name]["cells"][cell], runs["ours" + name]["cells"][cell]
                # tokens/s ratio of one round = their seconds / our seconds (same sentences)
                rounds = [a / b for a, b in zip(theirs["seconds"], ours["seconds"])]
                _, compute_type, split = name.split("-")
                rows.append({"mode": mode, "batch": batch, "compute_type": compute_type, "threads": split,
                             "ct2": theirs["tokens_per_s"], "oursct2": ours["tokens_per_s"],
                             "ratio_of_medians": ours["tokens_per_s"] / theirs["tokens_per_s"],
                             "median_round_ratio": statistics.median(rounds), "round_ratios": rounds,
                             "background_cores": max(theirs["background_cores"], ours["background_cores"])})
    return {"size": SIZES[size], "dims": dims(size), "rows": rows}


def write_export(results: list[dict], args: argparse.Namespace, seconds: float, load: str, out: Path) -> None:
    """The --export-only table: markdown to stdout and `out`/generate-export.md, data to generate-export.json."""
    lines = [f"Our export (`s2s export`) against CTranslate2 on the converted HF model of the same size: the same "
             f"engine, inputs and 26 decoder steps; {args.threads} threads as inter x intra; {args.repeats} rounds "
             f"per cell, each timing every engine once in a rotating order; load average at start {load}; "
             f"{seconds:.0f} s in all.", ""]
    all_ratios = []
    for result in results:
        lines += [f"### {result['size']}", "",
                  "| mode | batch | type | threads | CT2 (HF model) tokens/s | ours on CT2 tokens/s | ratio of medians "
                  "| median of round ratios | other load |", "|---|---:|---|---|---:|---:|---:|---:|---:|"]
        for r in result["rows"]:
            all_ratios.append(r["median_round_ratio"])
            lines.append(f"| {r['mode']} | {r['batch']} | {r['compute_type']} | {r['threads']} | {r['ct2']:,.0f} "
                         f"| {r['oursct2']:,.0f} | {r['ratio_of_medians']:.2f}x | {r['median_round_ratio']:.2f}x "
                         f"| {r['background_cores']:.2f} |")
        lines.append("")
    lines.append(f"Median over all {len(all_ratios)} cells of the round ratio: {statistics.median(all_ratios):.3f}x "
                 f"(lowest {min(all_ratios):.2f}x, highest {max(all_ratios):.2f}x; target >= {TARGET_EXPORT}x).")
    text = "\n".join(lines) + "\n"
    (out / "generate-export.md").write_text(text)
    (out / "generate-export.json").write_text(json.dumps({"repeats": args.repeats, "threads": args.threads,
                                                         "load_average_start": load, "sizes": results}, indent=2))
    print(text)
