"""Training history: per-step and validation records, written as JSONL/CSV and plotted to PNG."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

TRAIN_FIELDS = ["step", "epoch", "loss", "nll", "lr", "grad_norm", "tokens_per_s", "padding", "tokens_seen",
                "seconds_per_step"]
VALID_FIELDS = ["step", "valid_loss", "valid_nll", "bleu", "chrf", "sentences"]


@dataclass
class History:
    """Records in step order. A resumed run starts from the history saved in its checkpoint."""

    train: list[dict] = field(default_factory=list)
    valid: list[dict] = field(default_factory=list)

    def to_jsonl(self, kind: str) -> str:
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in getattr(self, kind))

    def to_csv(self, kind: str) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TRAIN_FIELDS if kind == "train" else VALID_FIELDS,
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(getattr(self, kind))
        return out.getvalue()

    def write(self, directory: Path) -> list[Path]:
        """Write train/valid JSONL and CSV plus curves.png into `directory`; returns the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for kind in ("train", "valid"):
            for ext, text in (("jsonl", self.to_jsonl(kind)), ("csv", self.to_csv(kind))):
                path = directory / f"{kind}.{ext}"
                path.write_text(text)
                paths.append(path)
        if self.train:
            paths.append(plot_curves(self, directory / "curves.png"))
        return paths

    @classmethod
    def read(cls, directory: Path) -> "History":
        """Read the JSONL files written by `write` (missing files give empty lists)."""
        def load(name: str) -> list[dict]:
            path = directory / name
            return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
        return cls(train=load("train.jsonl"), valid=load("valid.jsonl"))


def plot_curves(history: History, path: Path) -> Path:
    """Loss (train and validation), learning rate, and validation BLEU/chrF when validation
    decoded, side by side against the optimizer step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_scores = any(r.get("bleu") is not None for r in history.valid)
    panels = 3 if has_scores else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4), squeeze=False)
    loss_ax, lr_ax = axes[0][0], axes[0][1]
    loss_ax.plot([r["step"] for r in history.train], [r["loss"] for r in history.train], label="train loss", lw=1)
    if history.valid:
        loss_ax.plot([r["step"] for r in history.valid], [r["valid_loss"] for r in history.valid],
                     "o-", label="validation loss")
    loss_ax.set(xlabel="step", ylabel="label-smoothed loss (nats/token)", title="Loss")
    loss_ax.legend()
    lr_ax.plot([r["step"] for r in history.train], [r.get("lr", float("nan")) for r in history.train], color="C2")
    lr_ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if has_scores:
        score_ax = axes[0][2]
        steps = [r["step"] for r in history.valid]
        score_ax.plot(steps, [r["bleu"] for r in history.valid], "o-", label="BLEU")
        score_ax.plot(steps, [r["chrf"] for r in history.valid], "s-", label="chrF")
        score_ax.set(xlabel="step", ylabel="score (sacrebleu, 0-100)", title="Validation (greedy decoding)")
        score_ax.legend()
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
