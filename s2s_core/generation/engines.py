"""Engines: what turns one batch of source ids into hypotheses. The text layer (`text`) owns
strings, splitting and batching; an engine only runs the model, with the same options.

- `TorchEngine`: our `Generator` on the package's PyTorch model: float32 (oneDNN-packed on the
  CPU), or int8 (dynamic quantization, CPU only, any model family).
- `CTranslate2Engine`: CTranslate2's `Translator` on the package's export (`s2s export`). Its
  beam search is the same as ours (the best 2K candidates, hypotheses ending with EOS among
  the first K are finished, the search ends when K are), so the options map one to one. Three
  differences are undone here: CTranslate2 ranks by length ** alpha where we use GNMT's
  ((5 + length) / 6) ** alpha (it returns the K finished hypotheses ranked by log P and we rank
  them again); it normalises log-probabilities over the tokens it may generate where we do over
  the whole vocabulary (PAD and BOS are only suppressed for rows that produced them); it cuts a
  hypothesis at the length limit where we end it with EOS (rows that reach their limit are
  searched again with it, and the cut hypotheses scored with EOS). Sampling draws from
  CTranslate2's own generator: same seed, same outputs within an engine, not across engines.
  An imported model's forced first tokens (a target language code, BART's <s>) are its target
  prefix, and so is its decoder start token where the export leaves that to the caller.

`build_engine` picks one (`engine=auto`: CTranslate2 when the package has an export and
ctranslate2 is installed, else torch) and refuses impossible combinations in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.export.ct2 import (
    EXPORT_DIR,
    check_export,
    export_start_token,
    export_vocabulary,
    find_export,
    import_ctranslate2,
    vocabulary,
)
from s2s_core.generation.config import TORCH_COMPUTE_TYPES, GenerationConfig
from s2s_core.generation.generator import Generator, Hypothesis, TargetStart
from s2s_core.generation.penalties import length_normalizer
from s2s_core.models.inference import pack_for_cpu_inference, quantize_for_cpu_inference
from s2s_core.package import ModelPackage
from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID


class Engine(Protocol):
    name: str

    def generate(self, rows: list[list[int]], target: TargetStart | None = None) -> list[list[Hypothesis]]:
        """Source id lists (each ending in EOS) -> per row, its `nbest` hypotheses, best first;
        `target`: how every row's target starts (None: as the package's target tokenizer says)."""

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
        # An imported multilingual model is told its target language by forced first tokens.
        self.generator = Generator(package.model, config, prefix=package.target_tokenizer.prefix)
        self.device = device

    def generate(self, rows: list[list[int]], target: TargetStart | None = None) -> list[list[Hypothesis]]:
        return self.generator.generate(pad(rows).to(self.device), target)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "compute_type": self.compute_type, "device": str(self.device),
                "threads": torch.get_num_threads()}


@dataclass(frozen=True)
class _Vocabularies:
    """Token strings by id and back: CTranslate2 takes and returns strings. An export may leave
    out rows the package has (an imported model's added BOS, Marian's PAD): never generated."""

    source: list[str]
    target: list[str]
    target_ids: dict[str, int]
    exported: frozenset[str]
    """The target tokens the export has."""

    @classmethod
    def of(cls, package: ModelPackage, export: Path) -> "_Vocabularies":
        """Raises CheckpointError if the export has tokens the package's tokenizer lacks."""
        target = vocabulary(package.target_tokenizer)
        exported = frozenset(export_vocabulary(export, "target"))
        ids = {token: i for i, token in enumerate(target)}
        strangers = [token for token in exported if token not in ids]
        if strangers:
            raise CheckpointError(str(export), f"has {len(strangers)} target tokens the package's tokenizer lacks "
                                               f"(e.g. {strangers[0]!r}): run `s2s export` again")
        return cls(vocabulary(package.source_tokenizer), target, ids, exported)


@dataclass(frozen=True)
class _Prefix:
    """What one call gives CTranslate2's `target_prefix`: the decoder start token where the export
    leaves it to the caller (a language code: mBART-25), then the forced ids (a target language
    code, BART's <s>). CTranslate2 returns and counts the forced ones (length limit), not the start."""

    tokens: list[str]
    forced: int
    """How many of `tokens` are forced ids (the rest: the start token)."""


class CTranslate2Engine:
    """CTranslate2's Translator on the package's export, with our options and our ranking."""

    name = "ctranslate2"

    def __init__(self, package: ModelPackage, config: GenerationConfig, threads: int | None = None) -> None:
        ctranslate2 = import_ctranslate2()
        _check_ctranslate2_options(config)
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
        self.vocab = _Vocabularies.of(package, export)
        # Ours never generates PAD or BOS (penalties.forbid_specials): neither may CTranslate2.
        specials = [self.vocab.target[i] for i in (PAD_ID, BOS_ID) if self.vocab.target[i] in self.vocab.exported]
        self.specials = [[token] for token in specials]
        self.specials_set = set(specials)
        self.start_id = int(getattr(package.model, "decoder_start_id", BOS_ID))
        self.fixed_start = export_start_token(export) is not None
        """The export starts every target from its own token (else the caller gives it)."""
        self.forced = tuple(package.target_tokenizer.prefix)
        self.eos_index = export_vocabulary(export, "target").index(self.vocab.target[EOS_ID])
        """EOS's row in the export (its logits are in the export's order)."""

    def generate(self, rows: list[list[int]], target: TargetStart | None = None) -> list[list[Hypothesis]]:
        prefix = self._prefix(target)
        limits = [self.config.length_limit(len(row)) for row in rows]  # tokens before EOS, per row
        if self.config.sampling:
            self.ctranslate2.set_random_seed(self.config.seed)
        # Ours never generates PAD or BOS, but takes its log-probabilities over the whole
        # vocabulary; CTranslate2 takes them over the tokens it may generate, which moves every
        # score a little. So the search runs unrestricted, as ours does up to that rule, and
        # the rare rows that did produce PAD or BOS (weak models) run again without them.
        results = self._search(rows, limits, prefix, suppress=None)
        strays = [i for i, result in enumerate(results) if self._has_special(result, prefix.forced)]
        if strays:
            again = self._search([rows[i] for i in strays], [limits[i] for i in strays], prefix,
                                 suppress=self.specials)
            for i, result in zip(strays, again):
                results[i] = result
        return self._hypotheses(rows, results, limits, prefix, self._empty_endings(rows, prefix))

    def _prefix(self, target: TargetStart | None) -> _Prefix:
        """The target prefix of a call: `target`'s start token and forced ids (None: the package's).

        Raises:
            ConfigError: another start token than the one the export starts every target from."""
        forced = self.forced if target is None else tuple(target.forced)
        start = self.start_id if target is None or target.start is None else target.start
        tokens = [self.vocab.target[i] for i in forced]
        if not self.fixed_start:
            return _Prefix([self.vocab.target[start], *tokens], len(forced))
        if start != self.start_id:
            raise ConfigError([f"this CTranslate2 export starts every target from {self.vocab.target[self.start_id]!r}, "
                               f"not {self.vocab.target[start]!r}: use engine=torch for this target language"])
        return _Prefix(tokens, len(forced))

    def _empty_endings(self, rows: list[list[int]], prefix: _Prefix) -> list[float | None]:
        """Per row, the log P of the empty hypothesis (EOS right after the forced ids) where ours
        finds it and CTranslate2 does not (None elsewhere). A beam search of ours ends it there
        when EOS is among the K best tokens; CTranslate2 only when EOS is the best one (it keeps
        EOS out of the other beams at the first step after a target prefix: its issue #277).
        One short greedy call up to that step returns its logits, which tell."""
        beams = self.config.beam_size
        if beams == 1 or not prefix.forced or self.config.min_length > prefix.forced:
            return [None] * len(rows)
        results = self.translator.translate_batch(
            [[self.vocab.source[i] for i in row] for row in rows], target_prefix=[prefix.tokens] * len(rows),
            beam_size=1, max_decoding_length=prefix.forced + 1, max_input_length=0, return_logits_vocab=True)
        out: list[float | None] = []
        for result in results:
            logits = self._to_tensor(result.logits[0][-1]).double()  # (V,) the first free step's
            ending = logits[self.eos_index]
            better = int((logits > ending).sum())
            out.append(float(ending - torch.logsumexp(logits, 0)) if 0 < better < beams else None)  # 0: CT2 has it
        return out

    def _to_tensor(self, value) -> torch.Tensor:
        """A CTranslate2 StorageView (on this engine's device) as a CPU tensor."""
        import numpy as np

        if self.device == "cuda":
            value = value.to_device(self.ctranslate2.Device.cpu)
        return torch.from_numpy(np.asarray(value))

    def _search(self, rows: list[list[int]], limits: list[int], prefix: _Prefix,
                suppress: list[list[str]] | None) -> list:
        """CTranslate2's results for rows with these length limits, as ours would end them.

        One call for the batch, up to its longest limit + EOS. A beam search that reached a
        row's own (shorter) limit went on past it there, where ours ends at it: those rows are
        searched again with their own limit (rare: outputs that loop), which is then exact. Rows
        that cannot end before their limit (`min_length`) are searched with it at once."""
        results: list = [None] * len(rows)
        beam = self.config.beam_size > 1
        free = [i for i, limit in enumerate(limits) if not (beam and limit <= self.config.min_length)]
        if free:
            width = max(limits[i] for i in free) + 1
            for i, result in zip(free, self._translate([rows[i] for i in free], width, prefix, suppress)):
                results[i] = result
        again: dict[int, list[int]] = {}
        for i, (result, limit) in enumerate(zip(results, limits)):
            if result is None or (beam and _reached_limit(result, limit)):
                again.setdefault(limit, []).append(i)
        for limit, members in again.items():
            for i, result in zip(members, self._translate([rows[i] for i in members], limit, prefix, suppress)):
                results[i] = result
        return results

    def _has_special(self, result, forced: int) -> bool:
        """Whether a generated token (past the forced ones: BART forces <s>) is PAD or BOS."""
        return any(token in self.specials_set for tokens in result.hypotheses for token in tokens[forced:])

    def _translate(self, rows: list[list[int]], max_decoding_length: int, prefix: _Prefix,
                   suppress: list[list[str]] | None) -> list:
        config = self.config
        return self.translator.translate_batch(
            [[self.vocab.source[i] for i in row] for row in rows],
            target_prefix=[prefix.tokens] * len(rows) if prefix.tokens else None,
            beam_size=config.beam_size,
            num_hypotheses=config.beam_size if config.beam_size > 1 else config.nbest,
            # Any non-zero penalty makes CTranslate2's search end once K hypotheses are finished,
            # as ours does (at 0 it waits for the best beam to finish). One this small ranks
            # by log P, and keeps the K best: none that ours would prefer is dropped (a dropped
            # one is never longer than a kept one with a higher log P). We rank them again.
            length_penalty=_RAW_LOG_PROB_PENALTY if config.beam_size > 1 else 0.0,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            suppress_sequences=suppress,
            max_input_length=0,  # the text layer already cut sources to the model's limit
            max_decoding_length=max_decoding_length,
            min_decoding_length=min(config.min_length, max_decoding_length),
            return_scores=True,
            return_end_token=True,
            sampling_topk=(config.top_k if config.sampling else 1),
            sampling_topp=config.top_p,
            sampling_temperature=config.temperature,
        )

    def _hypotheses(self, rows: list[list[int]], results: list, limits: list[int], prefix: _Prefix,
                    empties: list[float | None]) -> list[list[Hypothesis]]:
        """CTranslate2's finished hypotheses of each row as ours, ranked by our length penalty.

        Ours ends every hypothesis that reaches the row's limit with EOS, scored with EOS's
        log-probability there; CTranslate2's are cut at the limit without it, so those are
        scored again (teacher-forced, EOS included), all of the batch in one call. Forced ids
        count towards the limit and the length, add nothing to log P, and are not returned."""
        eos, forced = self.vocab.target[EOS_ID], prefix.forced
        penalty = _RAW_LOG_PROB_PENALTY if self.config.beam_size > 1 else 0.0
        found: list[list[tuple[list[int], float | None]]] = []  # per row: [(ids, log P or None: score again)]
        for result, limit in zip(results, limits):
            found.append([])
            for tokens, score in zip(result.hypotheses, result.scores):
                ended = bool(tokens) and tokens[-1] == eos
                ids = [self.vocab.target_ids[t] for t in (tokens[:-1] if ended else tokens)]
                # CTranslate2's score is log P / len ** penalty, len counting EOS.
                found[-1].append((ids[:limit][forced:],
                                  score * len(tokens) ** penalty if ended and len(ids) <= limit else None))
        for hyps, empty in zip(found, empties):
            if empty is not None:
                _end_early(hyps, empty, self.config.beam_size)
        cut = [(row, ids) for row, hyps in zip(rows, found) for ids, log_prob in hyps if log_prob is None]
        rescored = iter(self._log_probs(cut, prefix))
        alpha = self.config.length_penalty
        out = []
        for hyps in found:
            ranked = []
            for ids, log_prob in hyps:
                log_prob = next(rescored) if log_prob is None else log_prob
                ranked.append(Hypothesis(tokens=ids, log_prob=log_prob,
                                         score=log_prob / float(length_normalizer(
                                             forced + len(ids) + 1, alpha, self.config.length_normalization))))
            ranked.sort(key=lambda h: -h.score)
            out.append(ranked[: self.config.nbest])
        return out

    def _log_probs(self, pairs: list[tuple[list[int], list[int]]], prefix: _Prefix) -> list[float]:
        """log P(target + EOS | source) of each (source, target), teacher-forced by CTranslate2
        after the prefix (whose forced ids add nothing, as in ours)."""
        if not pairs:
            return []
        results = self.translator.score_batch([[self.vocab.source[i] for i in source] for source, _ in pairs],
                                              [prefix.tokens + [self.vocab.target[i] for i in target]
                                               for _, target in pairs])
        return [float(sum(result.log_probs[prefix.forced:])) for result in results]

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "compute_type": self.translator.compute_type, "device": self.device,
                "threads": self.threads, "export_quantization": self.info.get("quantization")}


def _check_ctranslate2_options(config: GenerationConfig) -> None:
    """Refuse, in one line, what this engine does not reproduce: another limit ending.

    Raises:
        ConfigError: naming what needs engine=torch.
    """
    if config.limit_ending != "eos":
        raise ConfigError([f"limit_ending={config.limit_ending} needs engine=torch (engine=ctranslate2 ends at the "
                           f"limit with EOS)"])


_RAW_LOG_PROB_PENALTY = 1e-6
"""The length penalty CTranslate2 is given for beam search: see `CTranslate2Engine._translate`."""


def _end_early(hyps: list[tuple[list[int], float | None]], log_prob: float, beams: int) -> None:
    """Add the empty hypothesis ours ends first (see `CTranslate2Engine._empty_endings`) to a row's
    finished ones, in place. Ours then stops once K - 1 more have ended: of CTranslate2's, only the
    K - 1 that ended first (the shortest; those ending at the same step as the last one too)."""
    by_length = sorted(len(ids) for ids, _ in hyps)
    last = by_length[min(beams - 1, len(by_length)) - 1] if beams > 1 and by_length else -1
    hyps[:] = [([], log_prob)] + [(ids, lp) for ids, lp in hyps if len(ids) <= last]


def _reached_limit(result, limit: int) -> bool:
    """Whether a row's beam search reached its limit: some hypothesis has `limit` tokens or more
    (EOS included when it ended). One that stopped sooner is what ours finds: the limit made no
    difference (its longest hypotheses, ended at the last step, are among those returned)."""
    return any(len(tokens) > limit for tokens in result.hypotheses)


def pad(rows: list[list[int]]) -> torch.Tensor:
    """Id lists -> (B, S) long tensor, right-padded with PAD_ID."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
