"""Engines: what turns one batch of source ids into hypotheses. The text layer (`text`) owns
strings, splitting and batching; an engine only runs the model, with the same options.

- `TorchEngine`: our `Generator` on the package's PyTorch model: float32 (oneDNN-packed on the
  CPU), or int8 (dynamic quantization, CPU only, any model family).
- `CTranslate2Engine`: CTranslate2's `Translator` on the package's export (`s2s export`). Its
  beam search is the same as ours (the best 2K candidates, hypotheses ending with EOS among
  the first K are finished, the search ends when K are), so the options map one to one, except
  the length penalty: CTranslate2 divides by length ** alpha, we by the GNMT ((5 + length) / 6)
  ** alpha. It is asked for all K finished hypotheses with their scores, and they are ranked
  again with ours. Sampling draws from CTranslate2's own generator: same seed, same outputs
  within an engine, not across engines.

`build_engine` picks one (`engine=auto`: CTranslate2 when the package has an export and
ctranslate2 is installed, else torch) and refuses impossible combinations in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.export.ct2 import EXPORT_DIR, check_export, find_export, import_ctranslate2, vocabulary
from s2s_core.generation.config import TORCH_COMPUTE_TYPES, GenerationConfig
from s2s_core.generation.generator import Generator, Hypothesis
from s2s_core.generation.penalties import length_normalizer
from s2s_core.models.inference import pack_for_cpu_inference, quantize_for_cpu_inference
from s2s_core.package import ModelPackage
from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID


class Engine(Protocol):
    name: str

    def generate(self, rows: list[list[int]]) -> list[list[Hypothesis]]:
        """Source id lists (each ending in EOS) -> per row, its `nbest` hypotheses, best first."""

    def describe(self) -> dict[str, Any]:
        """What runs: engine, compute type, device, threads (for reports)."""


def ctranslate2_installed() -> bool:
    try:
        import_ctranslate2()
    except ConfigError:
        return False
    return True


def build_engine(package: ModelPackage, config: GenerationConfig, threads: int | None = None) -> Engine:
    """The engine `config.engine` asks for (auto: CTranslate2 if the package has an export and
    ctranslate2 is installed); `threads`: CPU threads it may use (None: its own default).

    Raises:
        ConfigError: ctranslate2 missing, or a compute type the engine cannot run.
        CheckpointError: CTranslate2 asked for a package without (or with a stale) export.
    """
    name = config.engine
    if name == "auto":
        name = "ctranslate2" if find_export(package) is not None and ctranslate2_installed() else "torch"
    if name == "torch":
        return TorchEngine(package, config)
    return CTranslate2Engine(package, config, threads)


class TorchEngine:
    """Our Generator on the package's PyTorch model."""

    name = "torch"

    def __init__(self, package: ModelPackage, config: GenerationConfig) -> None:
        device = next(package.model.parameters()).device
        if config.compute_type not in TORCH_COMPUTE_TYPES:
            raise ConfigError([f"compute_type={config.compute_type} needs engine=ctranslate2 (the torch engine "
                               f"runs {', '.join(TORCH_COMPUTE_TYPES)})"])
        if config.compute_type == "int8":
            if device.type != "cpu":
                raise ConfigError(["compute_type=int8 with engine=torch runs on the CPU only (torch has no "
                                   "int8 GPU kernels for it): use engine=ctranslate2 on a GPU"])
            quantize_for_cpu_inference(package.model)
        else:
            pack_for_cpu_inference(package.model)  # oneDNN kernels on the CPU: the package model is inference-only
        self.compute_type = "int8" if config.compute_type == "int8" else "float32"
        self.generator = Generator(package.model, config)
        self.device = device

    def generate(self, rows: list[list[int]]) -> list[list[Hypothesis]]:
        return self.generator.generate(pad(rows).to(self.device))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "compute_type": self.compute_type, "device": str(self.device),
                "threads": torch.get_num_threads()}


@dataclass(frozen=True)
class _Vocabularies:
    """Token strings by id and back: CTranslate2 takes and returns strings."""

    source: list[str]
    target: list[str]
    target_ids: dict[str, int]

    @classmethod
    def of(cls, package: ModelPackage) -> "_Vocabularies":
        target = vocabulary(package.target_tokenizer)
        return cls(vocabulary(package.source_tokenizer), target, {token: i for i, token in enumerate(target)})


class CTranslate2Engine:
    """CTranslate2's Translator on the package's export, with our options and our ranking."""

    name = "ctranslate2"

    def __init__(self, package: ModelPackage, config: GenerationConfig, threads: int | None = None) -> None:
        ctranslate2 = import_ctranslate2()
        export = find_export(package)
        if export is None:
            where = package.directory or "the model package"
            raise CheckpointError(str(where), f"has no CTranslate2 export ({EXPORT_DIR}/): run `s2s export --model "
                                              f"{where} --format ctranslate2`, or use engine=torch")
        self.info = check_export(package, export)
        self.config, self.ctranslate2 = config, ctranslate2
        self.device = "cuda" if next(package.model.parameters()).device.type == "cuda" else "cpu"
        # One batch at a time comes from the text layer: all threads go to it (intra), none to
        # parallel batches (inter); by default as many as torch would use. On a GPU, one host
        # thread drives the device.
        intra = 1 if self.device == "cuda" else (threads or torch.get_num_threads())
        self.translator = ctranslate2.Translator(str(export), device=self.device, compute_type=config.compute_type,
                                                 inter_threads=1, intra_threads=intra)
        self.threads = intra
        self.vocab = _Vocabularies.of(package)
        # Ours never generates PAD or BOS (penalties.forbid_specials): neither may CTranslate2.
        self.suppressed = [[self.vocab.target[PAD_ID]], [self.vocab.target[BOS_ID]]]

    def generate(self, rows: list[list[int]]) -> list[list[Hypothesis]]:
        config = self.config
        limits = [config.length_limit(len(row)) for row in rows]  # tokens before EOS, per row
        if config.sampling:
            self.ctranslate2.set_random_seed(config.seed)
        results = self.translator.translate_batch(
            [[self.vocab.source[i] for i in row] for row in rows],
            beam_size=config.beam_size,
            # With a length penalty, every finished hypothesis is needed to rank them our way;
            # without, CTranslate2 may stop once the best one ends (no later one can beat it).
            num_hypotheses=config.beam_size if config.length_penalty and config.beam_size > 1 else config.nbest,
            length_penalty=config.length_penalty,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            suppress_sequences=self.suppressed,
            max_input_length=0,  # the text layer already cut sources to the model's limit
            max_decoding_length=max(limits) + 1,  # + EOS; shorter rows are cut to their own limit below
            min_decoding_length=config.min_length,
            return_scores=True,
            return_end_token=True,
            sampling_topk=(config.top_k if config.sampling else 1),
            sampling_topp=config.top_p,
            sampling_temperature=config.temperature,
        )
        return [self._hypotheses(result, limit) for result, limit in zip(results, limits)]

    def _hypotheses(self, result, limit: int) -> list[Hypothesis]:
        """CTranslate2's finished hypotheses of one row as ours, ranked by our length penalty."""
        alpha = self.config.length_penalty
        eos = self.vocab.target[EOS_ID]
        out = []
        for tokens, score in zip(result.hypotheses, result.scores):
            # CTranslate2's score (greedy and beam): log P / len ** alpha, len counting EOS.
            log_prob = score * len(tokens) ** alpha if alpha else score
            ended = bool(tokens) and tokens[-1] == eos
            ids = [self.vocab.target_ids[t] for t in (tokens[:-1] if ended else tokens)][:limit]
            out.append(Hypothesis(tokens=ids, log_prob=log_prob,
                                  score=log_prob / float(length_normalizer(len(ids) + 1, alpha))))
        out.sort(key=lambda h: -h.score)
        return out[: self.config.nbest]

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "compute_type": self.translator.compute_type, "device": self.device,
                "threads": self.threads, "export_quantization": self.info.get("quantization")}


def pad(rows: list[list[int]]) -> torch.Tensor:
    """Id lists -> (B, S) long tensor, right-padded with PAD_ID."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
