"""oneDNN packing for CPU inference: same logits as the plain model, other weights untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from s2s_core.models import build_model, model_config
from s2s_core.models.inference import PackedLinear, pack_for_cpu_inference, packing_available

VOCAB = 50


@pytest.mark.parametrize("preset", ["transformer-tiny", "lstm-tiny"])
def test_packed_models_give_the_plain_models_logits(preset):
    torch.manual_seed(0)
    plain = build_model(model_config(preset, {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB})).eval()
    if not packing_available(plain):
        pytest.skip("this torch build has no oneDNN")
    packed = copy.deepcopy(plain)
    before = {k: v.clone() for k, v in packed.state_dict().items()}
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    assert pack_for_cpu_inference(packed) == linears + 1  # every Linear plus the output projection
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == linears + 1
    src = torch.randint(4, VOCAB, (3, 9))
    src[:, -1] = 3
    prev = torch.randint(4, VOCAB, (3, 5))
    with torch.inference_mode():
        torch.testing.assert_close(packed(src, prev), plain(src, prev), rtol=1e-5, atol=1e-5)
        state_plain, state_packed = plain.init_state(plain.encode(src)), packed.init_state(packed.encode(src))
        for token in prev.T:
            torch.testing.assert_close(packed.decode_step(token, state_packed), plain.decode_step(token, state_plain),
                                       rtol=1e-5, atol=1e-5)
    after = packed.state_dict()
    linear_weights = {f"{name}.{kind}" for name, m in plain.named_modules() if type(m) is torch.nn.Linear
                      for kind in ("weight", "bias") if getattr(m, kind) is not None}
    # Only the packed Linear weights leave the state dict (their memory is released); the
    # embeddings, norms and the tied output matrix stay as they were.
    assert set(before) - set(after) == linear_weights and set(after) <= set(before)
    assert all(torch.equal(after[k], before[k]) for k in after)
