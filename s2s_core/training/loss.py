"""Label-smoothed cross-entropy over the non-padding target positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and summed NLL of `target` under `logits`.

    logits: (N, V) scores of the N non-padding positions; target: (N,) ids.
    The smoothed loss is (1 - eps) * NLL + eps * mean over the vocabulary of -log p, the
    usual form (Szegedy et al.; fairseq's `label_smoothed_cross_entropy`). Computed in fp32
    whatever the autocast dtype, since the log-sum-exp over a large vocabulary is where
    bf16 loses precision.
    Returns:
        (loss_sum, nll_sum): 0-dim tensors, summed (not averaged) so callers can normalise
        by the token count of the whole global batch.
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,)
    nll_sum = nll.sum()
    if smoothing == 0:
        return nll_sum, nll_sum
    smooth = -lprobs.mean(dim=-1)  # (N,)
    loss_sum = (1 - smoothing) * nll_sum + smoothing * smooth.sum()
    return loss_sum, nll_sum
