"""The prepare stage end to end on real Ray + Prefect, on the committed real corpus slice."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.prepare.flow import prepare_corpus
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pipeline")]
NO_TOKENIZER = ["tokenizer.enabled=false"]
REAL = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()


def read_split(out: Path, split: str) -> pa.Table:
    files = sorted((out / split).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def assert_counts_add_up(manifest: dict, out: Path) -> None:
    counts = manifest["counts"]
    kept = sum(counts["splits"].values())
    assert counts["read"] == kept + sum(counts["rejected"].values()) + counts["duplicates"]
    for split in ("train", "valid", "test"):
        assert read_split(out, split).num_rows == counts["splits"][split]
    rejects = read_split(out, "rejects")
    assert rejects.num_rows == sum(counts["rejected"].values()) + counts["duplicates"]
    for entry in [f for files in manifest["shards"].values() for f in files]:
        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


def bad_rows_tsv(path: Path) -> dict[str, int]:
    """Real pairs with every kind of broken line mixed in; returns the expected reject counts."""
    good = REAL[:300]
    lines = [line.encode() for line in good]
    bad = [
        (b"no tab on this line", "bad_field_count"),
        (b"three\tfields\there", "bad_field_count"),
        (b"caf\xe9 latin-1\tcaff\xe8", "invalid_utf8"),
        (b"a NUL\x00 byte\tun byte NUL", "control_chars"),
        (("x" * 1_000_000 + "\tlunga").encode(), "too_long_chars"),
        (b"Same text\tSame text", "identical"),
        (b"\t", "empty"),
        (good[5].encode(), "duplicate"),
        (good[7].replace("\t", "  \t ").encode(), "duplicate"),  # equal after whitespace normalisation
    ]
    for i, (line, _) in enumerate(bad):
        lines.insert(20 + i * 25, line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected: dict[str, int] = {}
    for _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    return expected


def test_counts_add_up_on_real_slice_with_bad_rows(tmp_path):
    expected = bad_rows_tsv(tmp_path / "mixed.tsv")
    manifest = prepare_corpus(inputs=[str(tmp_path / "mixed.tsv"), str(SAMPLE / "train.tsv")],
                              output=str(tmp_path / "out"), overrides=NO_TOKENIZER)
    counts = manifest["counts"]
    assert counts["read"] == 300 + len(REAL) + 9
    # the 300 good rows are also in train.tsv: they are duplicates of the first input's rows
    assert counts["duplicates"] == expected.pop("duplicate") + 300
    for reason, n in expected.items():
        assert counts["rejected"].get(reason, 0) >= n, reason
    assert_counts_add_up(manifest, tmp_path / "out")
    rejects = read_split(tmp_path / "out", "rejects").to_pylist()
    utf8 = next(r for r in rejects if r["reason"] == "invalid_utf8")
    assert utf8["raw"] == b"caf\xe9 latin-1\tcaff\xe8" and utf8["origin"].endswith("mixed.tsv")
    # file row numbers are 1-based lines of the input
    line_of = {r["raw"]: r["row"] for r in rejects if r["raw"]}
    assert line_of[b"no tab on this line"] == 21


def test_shards_are_clean_unique_and_deterministic(tmp_path):
    first = prepare_corpus(inputs=[str(SAMPLE / "train.tsv")], output=str(tmp_path / "a"))
    # tiny chunks: many map tasks over byte ranges; the output must not change
    second = prepare_corpus(inputs=[str(SAMPLE / "train.tsv")], output=str(tmp_path / "b"),
                            overrides=["shards.chunk_mb=0.05"])
    assert first["dataset_id"] == second["dataset_id"]
    assert first["shards"] == second["shards"] and first["counts"] == second["counts"]
    for split in ("train", "valid", "test"):
        for entry in first["shards"][split]:
            assert (tmp_path / "a" / entry["path"]).read_bytes() == (tmp_path / "b" / entry["path"]).read_bytes()
    assert (tmp_path / "a/tokenizer/spm.model").read_bytes() == (tmp_path / "b/tokenizer/spm.model").read_bytes()
    ids = [read_split(tmp_path / "a", s)["id"].to_pylist() for s in ("train", "valid", "test")]
    all_ids = [i for split in ids for i in split]
    assert len(all_ids) == len(set(all_ids)) == first["counts"]["kept"]
    train = read_split(tmp_path / "a", "train")
    assert train.column_names == ["id", "source", "target", "origin"]
    assert not any("  " in s or s != s.strip() for s in train["source"].to_pylist())


def test_second_run_reuses_and_different_dataset_is_refused(tmp_path):
    out = tmp_path / "out"
    prepare_corpus(inputs=[str(SAMPLE / "dev.tsv")], output=str(out), overrides=NO_TOKENIZER)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = prepare_corpus(inputs=[str(SAMPLE / "dev.tsv")], output=str(out), overrides=NO_TOKENIZER)
    assert again["counts"]["read"] == 500
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    prepare_corpus(inputs=[str(SAMPLE / "dev.tsv")], output=str(out), overrides=NO_TOKENIZER, overwrite=True)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}  # the same dataset: kept
    from s2s_core.errors import OutputError
    with pytest.raises(OutputError, match="holds a dataset with a different id.*--overwrite"):
        prepare_corpus(inputs=[str(SAMPLE / "test.tsv")], output=str(out), overrides=NO_TOKENIZER)
    replaced = prepare_corpus(inputs=[str(SAMPLE / "test.tsv")], output=str(out), overrides=NO_TOKENIZER,
                              overwrite=True)
    assert replaced["dataset_id"] != json.loads(json.dumps(again))["dataset_id"]
    assert {r for r in read_split(out, "train")["origin"].to_pylist()} == {str(SAMPLE / "test.tsv")}


def test_every_format_with_metadata(tmp_path):
    pairs = [line.split("\t") for line in REAL[:400]]
    jsonl = [json.dumps({"en": s, "it": t, "domain": "ui", "id": n}) for n, (s, t) in enumerate(pairs[0:100])]
    (tmp_path / "a.jsonl").write_text("\n".join(jsonl) + "\n")
    pq.write_table(pa.table({"en": [s for s, _ in pairs[100:200]], "it": [t for _, t in pairs[100:200]],
                             "score": [0.5] * 100}), tmp_path / "b.parquet", row_group_size=30)
    (tmp_path / "c.en").write_text("\n".join(s for s, _ in pairs[200:300]) + "\n")
    (tmp_path / "c.it").write_text("\n".join(t for _, t in pairs[200:300]) + "\n")
    (tmp_path / "d.tsv.gz").write_bytes(gzip.compress(("\n".join(REAL[300:400]) + "\n").encode()))
    inputs = [str(tmp_path / n) for n in ("a.jsonl", "b.parquet", "c", "d.tsv.gz")]
    manifest = prepare_corpus(inputs=inputs, output=str(tmp_path / "out"),
                              overrides=NO_TOKENIZER + ["reader.source_field=en", "reader.target_field=it"])
    assert [i["format"] for i in manifest["inputs"]] == ["jsonl", "parquet", "text", "tsv"]
    assert [i["rows_read"] for i in manifest["inputs"]] == [100] * 4
    assert_counts_add_up(manifest, tmp_path / "out")
    rows = pa.concat_tables([read_split(tmp_path / "out", s) for s in ("train", "valid", "test")]).to_pylist()
    by_origin = {}
    for row in rows:
        by_origin.setdefault(row["origin"], []).append(row)
    assert set(by_origin) == {str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet"),
                              f"{tmp_path / 'c'}.{{en,it}}", str(tmp_path / "d.tsv.gz")}
    assert all(r["domain"] == "ui" and isinstance(r["input_id"], int) for r in by_origin[str(tmp_path / "a.jsonl")])
    assert all(r["score"] == 0.5 and r["domain"] is None for r in by_origin[str(tmp_path / "b.parquet")])


def test_held_out_inputs_win_dedup_and_fill_their_splits(tmp_path):
    leaked = (SAMPLE / "test.tsv").read_text().splitlines()[:10]
    (tmp_path / "train.tsv").write_text("\n".join(REAL[:1000] + leaked) + "\n")
    manifest = prepare_corpus(inputs=[str(tmp_path / "train.tsv")], valid_inputs=[str(SAMPLE / "dev.tsv")],
                              test_inputs=[str(SAMPLE / "test.tsv")], output=str(tmp_path / "out"),
                              overrides=NO_TOKENIZER)
    out = tmp_path / "out"
    assert set(read_split(out, "valid")["origin"].to_pylist()) == {str(SAMPLE / "dev.tsv")}
    assert set(read_split(out, "test")["origin"].to_pylist()) == {str(SAMPLE / "test.tsv")}
    assert set(read_split(out, "train")["origin"].to_pylist()) == {str(tmp_path / "train.tsv")}
    assert manifest["counts"]["duplicates"] >= 10
    dup_origins = [r["origin"] for r in read_split(out, "rejects").to_pylist() if r["reason"] == "duplicate"]
    assert dup_origins.count(str(tmp_path / "train.tsv")) >= 10
    assert_counts_add_up(manifest, out)


def test_fixed_split_sizes(tmp_path):
    manifest = prepare_corpus(inputs=[str(SAMPLE / "train.tsv")], output=str(tmp_path / "out"),
                              overrides=NO_TOKENIZER + ["split.valid_rows=123", "split.test_rows=45",
                                                        "shards.num_shards=3", "shards.chunk_mb=0.1"])
    assert manifest["counts"]["splits"]["valid"] == 123
    assert manifest["counts"]["splits"]["test"] == 45
    assert len(manifest["shards"]["train"]) == 3


def test_s3_in_and_out_matches_local(tmp_path, s3_env):
    bucket = s3_env.create_bucket("prepare-io")
    client = s3_env.client()
    client.upload_file(str(SAMPLE / "dev.tsv"), bucket, "raw/dev.tsv")
    client.put_object(Bucket=bucket, Key="raw/README.txt", Body=b"not a corpus")
    remote = prepare_corpus(inputs=[f"s3://{bucket}/raw/"], output=f"s3://{bucket}/datasets/dev",
                            overrides=["tokenizer.vocab_size=500"])
    local = prepare_corpus(inputs=[str(SAMPLE / "dev.tsv")], output=str(tmp_path / "out"),
                           overrides=["tokenizer.vocab_size=500"])
    assert remote["counts"] == local["counts"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="datasets/dev/")["Contents"]}
    assert "datasets/dev/manifest.json" in keys and "datasets/dev/tokenizer/spm.model" in keys
    body = client.get_object(Bucket=bucket, Key="datasets/dev/train/part-00000.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(body))["id"].to_pylist() == read_split(tmp_path / "out", "train")["id"].to_pylist()
    tok = client.get_object(Bucket=bucket, Key="datasets/dev/tokenizer/spm.model")["Body"].read()
    assert tok == (tmp_path / "out/tokenizer/spm.model").read_bytes()


def test_language_identification_rejects_swapped_pairs_with_what_it_detected(tmp_path):
    pairs = [tuple(line.split("\t")[:2]) for line in
             (SAMPLE / "test.tsv").read_text(encoding="utf-8").split("\n") if line][:60]
    long_pairs = [(s, t) for s, t in pairs if len(s) >= 60 and len(t) >= 60][:5]
    swapped = {(t, s) for s, t in long_pairs}
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("".join(f"{s}\t{t}\n" for s, t in [*pairs, *swapped]), encoding="utf-8")
    out = tmp_path / "out"
    manifest = prepare_corpus(inputs=[str(corpus)], output=str(out),
                              overrides=["clean.language_id.enabled=true", "tokenizer.enabled=false"])
    assert_counts_add_up(manifest, out)
    assert manifest["counts"]["rejected"].get("wrong_language", 0) >= len(swapped) == 5
    rejects = read_split(out, "rejects").to_pylist()
    wrong = [r for r in rejects if r["reason"] == "wrong_language"]
    assert {(r["source"], r["target"]) for r in wrong} >= swapped
    assert all("(expected en)" in r["detail"] or "(expected it)" in r["detail"] for r in wrong)
