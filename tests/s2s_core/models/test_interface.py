"""The interface every family offers the trainer and the generator: shapes, output masks,
incremental state, dropout modes, embeddings and the state dict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from s2s_core.models import EncoderOutput, build_model, model_config
from s2s_core.tokenizer import BOS_ID, PAD_ID
from tests.s2s_core.models.common import VARIANTS, VOCAB, pad, random_rows, src_vocab, tiny

LENGTHS_SRC, LENGTHS_TGT = [5, 9, 2], [4, 6, 7]


def batch(model, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return pad(random_rows(LENGTHS_SRC, src_vocab(model), g)), pad(random_rows(LENGTHS_TGT, VOCAB, g))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shapes_and_output_mask(variant):
    model = tiny(variant)
    src, prev = batch(model)
    logits = model(src, prev)
    assert logits.shape == (3, 7, VOCAB)
    mask = prev.ne(PAD_ID)
    selected = model(src, prev, output_mask=mask)
    assert selected.shape == (sum(LENGTHS_TGT), VOCAB)
    torch.testing.assert_close(selected, logits[mask], rtol=0, atol=1e-5)  # row-major order


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_encode_and_decode_step_shapes(variant):
    model = tiny(variant)
    src, _ = batch(model)
    encoded = model.encode(src)
    assert isinstance(encoded, EncoderOutput)
    width = getattr(model.config, "d_model", None) or model.config.hidden_size
    assert encoded.states.shape == (3, 9, width)
    assert torch.equal(encoded.padding_mask, src.eq(PAD_ID))
    state = model.init_state(encoded)
    logits = model.decode_step(torch.full((3,), BOS_ID), state)
    assert logits.shape == (3, VOCAB)
    state.reorder(torch.tensor([2, 2, 0, 1, 0]))  # expand to 5 rows
    assert model.decode_step(logits.argmax(1)[[2, 2, 0, 1, 0]], state).shape == (5, VOCAB)


@pytest.mark.parametrize("variant", ["transformer-pre", "lstm-luong-general-2layers"])
def test_dropout_is_active_in_training_mode_only(variant):
    model = tiny(variant)
    src, prev = batch(model)
    with torch.no_grad():
        assert torch.equal(model(src, prev), model(src, prev))
        model.train()
        assert not torch.allclose(model(src, prev), model(src, prev))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pad_embedding_is_zero_and_lookups_give_it_no_gradient(variant):
    model = tiny(variant).train()
    src, prev = batch(model)
    model.encode(src).states.sum().backward()
    table = model.src_embedding.weight
    assert torch.count_nonzero(table[PAD_ID]) == 0 and table[4:].std() > 0
    assert torch.count_nonzero(table.grad[PAD_ID]) == 0
    assert torch.count_nonzero(table.grad[4:]) > 0


@pytest.mark.parametrize("variant", ["transformer-untied-gelu", "lstm-luong-dot-untied"])
def test_untied_target_embedding_pad_row_gets_no_gradient(variant):
    # A tied table also serves as the output projection, where the PAD row is an ordinary logit
    # weight (as in fairseq); only the lookup path must leave it alone.
    model = tiny(variant).train()
    src, prev = batch(model)
    model(src, prev).sum().backward()
    table = model.target_embedding.weight
    assert torch.count_nonzero(table[PAD_ID]) == 0
    assert torch.count_nonzero(table.grad[PAD_ID]) == 0


def test_shared_and_tied_tables_are_one_tensor():
    shared = tiny("transformer-pre")
    assert shared.target_embedding.weight is shared.src_embedding.weight and shared.output_weight is None
    untied = tiny("transformer-untied-gelu")
    weights = {untied.src_embedding.weight.data_ptr(), untied.target_embedding.weight.data_ptr(),
               untied.output_weight.data_ptr()}
    assert len(weights) == 3
    assert untied.src_embedding.weight.shape[0] == 60 and untied.output_weight.shape[0] == VOCAB


def test_positions_are_a_buffer_outside_the_state_dict():
    model = tiny("transformer-pre")
    names = {name for name, _ in model.named_parameters()}
    assert not any("position" in name for name in names)
    assert "positions" not in model.state_dict()
    assert model.positions.shape == (1024, 64)
    # sin in even columns, cos in odd ones; position 0 is (0, 1, 0, 1, ...)
    assert torch.equal(model.positions[0, :4], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(model.positions[5, 0], torch.sin(torch.tensor(5.0)))


def test_too_long_sequences_are_refused():
    model = build_model(model_config("transformer-tiny", {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB,
                                                          "max_positions": 8}))
    with pytest.raises(ValueError, match=r"sequence of 9 tokens is longer than max_positions \(8\)"):
        model(torch.full((1, 9), 5), torch.full((1, 3), 5))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_round_trips_through_safetensors(variant, tmp_path):
    # safetensors refuses aliased tensors, so shared/tied tables must appear once.
    model = tiny(variant, seed=1)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = tiny(variant, seed=2)
    src, prev = batch(model)
    assert not torch.allclose(fresh(src, prev), model(src, prev))
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    torch.testing.assert_close(fresh(src, prev), model(src, prev), rtol=0, atol=0)


def test_default_options_keep_the_state_dict_names():
    # Packages saved before the imported-model options existed must still load by name.
    names = {name.split(".")[0] for name in tiny("transformer-pre").state_dict()}
    assert names == {"src_embedding", "encoder_layers", "decoder_layers", "encoder_norm", "decoder_norm"}
    post = {name.split(".")[0] for name in tiny("transformer-post").state_dict()}
    assert post == {"src_embedding", "encoder_layers", "decoder_layers"}


def test_sinusoidal_layouts_match_their_definitions():
    import math

    halves = tiny("transformer-marian-like").positions  # Marian: all sines, then all cosines
    dim = halves.shape[1]
    for pos in (0, 3, 17):
        angles = [pos / 10000 ** (2 * (j // 2) / dim) for j in range(dim)]
        expected = [math.sin(a) for a in angles[0::2]] + [math.cos(a) for a in angles[1::2]]
        torch.testing.assert_close(halves[pos], torch.tensor(expected), rtol=0, atol=1e-6)
    fairseq = tiny("transformer-m2m-like").positions  # row p is fairseq's row p + 2
    half = dim // 2
    for pos in (0, 3, 17):
        angles = [(pos + 2) * math.exp(-i * math.log(10000) / (half - 1)) for i in range(half)]
        expected = [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
        torch.testing.assert_close(fairseq[pos], torch.tensor(expected), rtol=0, atol=1e-5)


def test_learned_positions_are_read_from_the_offset():
    model = tiny("transformer-bart-like")
    assert model.src_positions.shape == (1024 + 2, 64) and model.tgt_positions.shape == (1024 + 2, 64)
    assert torch.equal(model.position_table(source=True)[0], model.src_positions[2])
    assert torch.equal(model.position_table(source=False)[5], model.tgt_positions[7])
    assert {"src_positions", "tgt_positions", "src_embedding_norm.weight", "output_bias"} <= set(model.state_dict())


def test_the_output_bias_is_a_fixed_part_of_the_logits():
    model = tiny("transformer-bart-like")
    assert "output_bias" not in dict(model.named_parameters())
    src, prev = batch(model)
    before = model(src, prev)
    with torch.no_grad():
        model.output_bias[7] = 5.0
    torch.testing.assert_close(model(src, prev)[..., 7], before[..., 7] + 5.0)
    torch.testing.assert_close(model(src, prev)[..., :7], before[..., :7])


@pytest.mark.parametrize("speed_up", ["pack", "quantize"])
def test_inference_speed_ups_keep_the_output_bias(speed_up):
    from s2s_core.models.inference import pack_for_cpu_inference, quantize_for_cpu_inference

    model = tiny("transformer-bart-like")
    with torch.no_grad():
        model.output_bias.copy_(torch.linspace(-3, 3, VOCAB))
    src, prev = batch(model)
    expected = model(src, prev)
    if speed_up == "pack" and not pack_for_cpu_inference(model):
        pytest.skip("no oneDNN on this machine")
    if speed_up == "quantize":
        quantize_for_cpu_inference(model)
    tolerance = 1e-4 if speed_up == "pack" else 0.2
    torch.testing.assert_close(model(src, prev), expected, rtol=0, atol=tolerance)
