"""Human-readable summaries of a manifest: a terminal table and a Prefect markdown table."""

from __future__ import annotations


def count_rows(manifest: dict) -> list[tuple[str, int]]:
    """(label, count) rows: read, then where every read row went. They add up to `read`."""
    counts = manifest["counts"]
    rows = [("rows read", counts["read"])]
    rows += [(f"  kept: {name}", n) for name, n in counts["splits"].items()]
    rows += [(f"  rejected: {reason}", n) for reason, n in counts["rejected"].items()]
    rows.append(("  duplicates", counts["duplicates"]))
    return rows


def counts_table(manifest: dict, output: str) -> str:
    rows = count_rows(manifest)
    width = max(len(label) for label, _ in rows)
    lines = [f"dataset {output}  (id {manifest['dataset_id'][:12]})"]
    lines += [f"{label:<{width}}  {n:>10,}" for label, n in rows]
    tokenizer = manifest.get("tokenizer")
    if tokenizer:
        files = ", ".join(sorted(set(tokenizer["model_files"].values())))
        if tokenizer.get("reused_from"):
            lines.append(f"tokenizer: {files} copied from {tokenizer['reused_from']}")
        else:
            config = manifest["config"]["tokenizer"]
            lines.append(f"tokenizer: {files} trained on {tokenizer['pairs']:,} pairs "
                         f"(vocab {config['vocab_size']:,}, {config['model_type']})")
    return "\n".join(lines)


def counts_markdown(manifest: dict, output: str) -> str:
    lines = [f"# Prepared dataset `{output}`", "", f"id `{manifest['dataset_id']}`", "",
             "| | rows |", "|---|---:|"]
    lines += [f"| {label.strip()} | {n:,} |" for label, n in count_rows(manifest)]
    return "\n".join(lines) + "\n"
