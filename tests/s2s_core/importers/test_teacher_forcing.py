"""Fine-tuning an imported model trains it on the rows it was made for: a batch made by our
batching (the tokenizer's templates, the model's decoder start token, padding masked out of the
loss) holds exactly the Hugging Face tokenizer's rows and gives the Hugging Face model's loss."""

from __future__ import annotations

import sys

import torch

from s2s_core.training.batching import TokenizedPairs, make_batch
from s2s_core.training.config import ValidationConfig
from s2s_core.training.loss import label_smoothed_nll
from s2s_core.training.setup import row_layout
from s2s_core.training.validation import ValidationSet, validate

from .conftest import Case


def our_batch(case: Case, sources: list[str], targets: list[str]):
    package = case.package
    pairs = TokenizedPairs.from_lists(package.source_tokenizer.encode_batch(sources),
                                      package.target_tokenizer.encode_batch(targets))
    layout = row_layout(package.source_tokenizer, package.target_tokenizer, package.config)
    return pairs, layout, make_batch(pairs, range(len(sources)), layout)


def origin_rows(tokenizer, rows: torch.Tensor) -> list[list[int]]:
    """(B, T) our ids, right-padded -> the checkpoint's ids of each row without its padding."""
    return [tokenizer.to_origin([i for i in row if i != 0]) for row in rows.tolist()]


def hf_decoder_inputs(model, labels: torch.Tensor) -> torch.Tensor:
    """(B, T) padded labels -> what the Hugging Face model feeds its decoder when trained on them
    (each family's own shift: mBART's wraps the last token around)."""
    if hasattr(model, "prepare_decoder_input_ids_from_labels"):
        return model.prepare_decoder_input_ids_from_labels(labels=labels)
    family = sys.modules[type(model).__module__]  # M2M-100 and NLLB: only the module's function
    return family.shift_tokens_right(labels, model.config.pad_token_id, model.config.decoder_start_token_id)


def test_a_batch_holds_the_checkpoint_tokenizers_rows_and_decoder_inputs(case: Case, model_pairs):
    sources, targets = [s for s, _ in model_pairs[:40]], [t for _, t in model_pairs[:40]]
    _, _, batch = our_batch(case, sources, targets)
    theirs = case.hf_tokenizer(sources, text_target=targets)
    assert origin_rows(case.package.source_tokenizer, batch.src) == theirs["input_ids"]
    assert origin_rows(case.package.target_tokenizer, batch.target) == theirs["labels"]
    padded = case.hf_tokenizer(sources, text_target=targets, return_tensors="pt", padding=True)["labels"]
    lengths = [len(row) for row in theirs["labels"]]
    expected = [row[:n] for row, n in zip(hf_decoder_inputs(case.hf_model, padded).tolist(), lengths)]
    ours = [case.package.target_tokenizer.to_origin(row[:n]) for row, n in zip(batch.prev.tolist(), lengths)]
    assert ours == expected


def test_the_training_loss_equals_the_checkpoint_models_loss(case: Case, model_pairs):
    sources, targets = [s for s, _ in model_pairs[:60]], [t for _, t in model_pairs[:60]]
    pairs, layout, batch = our_batch(case, sources, targets)
    model = case.package.model.eval()
    mask = batch.target != 0  # (B, T): the loss skips padding
    with torch.no_grad():
        logits = model(batch.src, batch.prev, output_mask=mask)  # (N, V)
        loss_sum, _ = label_smoothed_nll(logits.double(), batch.target[mask], smoothing=0.0)
    ours = float(loss_sum) / int(mask.sum())

    inputs = case.hf_tokenizer(sources, text_target=targets, return_tensors="pt", padding=True)
    inputs["labels"][inputs["labels"] == case.hf_tokenizer.pad_token_id] = -100  # Hugging Face's ignore index
    with torch.no_grad():
        theirs = float(case.hf_model(**inputs).loss)
    print(f"{case.family}: our loss {ours:.6f}, Hugging Face {theirs:.6f}")
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    assert theirs > 1.0  # a real distribution, not a degenerate one that anything matches

    # Validation scores the same rows: its loss without smoothing is this one.
    scores = validate(model, ValidationSet(pairs, targets, layout), ValidationConfig(decode_sentences=0),
                      case.package.target_tokenizer, smoothing=0.0, max_tokens=4096, device=torch.device("cpu"))
    assert abs(scores["valid_nll"] - theirs) < 1e-4
