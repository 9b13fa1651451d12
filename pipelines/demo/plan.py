"""What `make demo` runs: the inputs, settings and output locations of every stage, for a task
(translate or summarize) in a full or a quick (smoke-test) version.

The full translation demo trains `transformer-small` for 500 steps on the committed en-it sample
(about 8 minutes of its 15 on a 2-core machine); the quick one trains `transformer-tiny` for 120
(about a minute in all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.storage import join

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "sample"


@dataclass(frozen=True)
class DemoPlan:
    task: str
    quick: bool
    local_root: Path
    """Local folder for everything the demo writes (its summary, and the SeaweedFS data with S3)."""
    data_root: str
    """Where the stages write: `local_root`, or an s3:// prefix on the demo's own S3 server."""
    train_file: str
    test_file: str
    valid_file: str | None
    prepare_overrides: list[str]
    train_overrides: list[str]
    decoding_overrides: list[str]
    train_workers: int
    bulk_workers: int
    max_steps: int = field(init=False)

    def __post_init__(self) -> None:
        steps = next(o for o in self.train_overrides if o.startswith("max_steps="))
        object.__setattr__(self, "max_steps", int(steps.split("=", 1)[1]))

    @property
    def name(self) -> str:
        return f"{self.task}-quick" if self.quick else self.task

    def uri(self, stage: str) -> str:
        """Output location of a stage ('dataset', 'train', 'evaluation', 'bulk')."""
        return join(self.data_root, stage)


def demo_plan(task: str, quick: bool, output: Path, data_root: str | None = None) -> DemoPlan:
    """The plan for `task`; its files go to OUTPUT/TASK[-quick], and the stages write under
    `data_root` (default: that folder)."""
    local_root = output.resolve() / (f"{task}-quick" if quick else task)
    corpus = _corpus(task)
    train = ["log_every=10", "optim.lr=1e-3", "batching.max_tokens=2048", "checkpoint.every_steps=100"]
    if quick:
        train = ["preset=transformer-tiny", "max_steps=120", "log_every=20", "optim.lr=3e-3", "schedule.warmup_steps=30",
                 "batching.max_tokens=2048", "validation.every_steps=60", "validation.decode_sentences=20",
                 "checkpoint.every_steps=60"]
    else:
        train += ["preset=transformer-small", "max_steps=500", "schedule.warmup_steps=100",
                  "validation.every_steps=100", "validation.decode_sentences=100"]
    decoding = ["beam_size=1", "max_len_b=20"] if quick else ["beam_size=4"]
    if task == "summarize":
        # Sources are paragraphs (median 51 words), targets one line: no length-ratio filter,
        # longer sources in training, and the validation decoding as short as a synopsis.
        corpus["prepare"] += ["clean.max_length_ratio=null", "clean.max_chars=3000", "split.valid_rows=100"]
        train += ["batching.max_source_len=512", "batching.max_target_len=64", "batching.max_tokens=4096",
                  "validation.max_len_a=0", "validation.max_len_b=32"]
        decoding = ["beam_size=1"] if quick else []
    return DemoPlan(task=task, quick=quick, local_root=local_root, data_root=data_root or str(local_root),
                    train_file=corpus["train"], test_file=corpus["test"], valid_file=corpus.get("valid"),
                    prepare_overrides=corpus["prepare"] + [f"tokenizer.vocab_size={1000 if quick else 4000}"],
                    train_overrides=train, decoding_overrides=decoding,
                    train_workers=1 if quick else 2, bulk_workers=1 if quick else 2)


def _corpus(task: str) -> dict:
    if task == "translate":
        folder = SAMPLES / "en-it"
        return {"train": str(folder / "train.tsv"), "valid": str(folder / "dev.tsv"),
                "test": str(folder / "test.tsv"), "prepare": []}
    folder = SAMPLES / "summarization-en"
    return {"train": str(folder / "train.tsv"), "test": str(folder / "test.tsv"), "prepare": []}
