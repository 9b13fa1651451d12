"""`make demo` / `s2s demo`: the whole pipeline on the committed sample in one command, on local
Ray and Prefect's ephemeral API, into `demo-output/` (or, with S2S_DEMO_S3=1, into a local
SeaweedFS S3 server that the demo starts and stops)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

DEMO_BUCKET = "demo"


def run_demo(task: str, quick: bool, clean: bool, output: Path, s3: bool) -> int:
    """Run the demo flow; returns the exit code."""
    name = f"{task}-quick" if quick else task
    if clean and (output / name).exists():
        print(f"CLEAN=1: removing {output / name}", file=sys.stderr)
        shutil.rmtree(output / name)
    started = time.monotonic()
    with _storage(output / name, s3) as data_root:
        from pipelines.demo.flow import demo

        demo(task=task, quick=quick, local_root=str(output), data_root=data_root and f"{data_root}/{name}")
    print(f"demo ({name}) finished in {time.monotonic() - started:,.0f} s", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _storage(local_root: Path, s3: bool) -> Iterator[str | None]:
    """None (write locally), or an s3:// root on a SeaweedFS server kept in LOCAL_ROOT/seaweedfs
    for this run (its data stays, so a second run reuses the stages there too)."""
    if not s3:
        yield None
        return
    from pipelines.local_s3 import run_s3_server

    with run_s3_server(local_root / "seaweedfs") as server:
        print(f"S2S_DEMO_S3=1: SeaweedFS S3 server at {server.endpoint_url}", file=sys.stderr)
        os.environ.update(server.env())
        client = server.client()
        if DEMO_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            server.create_bucket(DEMO_BUCKET)
        yield f"s3://{DEMO_BUCKET}"
