"""Batch-invariant decoding (inference/batch_invariant.py): the same numbers as before on a CPU, and on CUDA a
clip's logits and tokens do not change with the batch it is decoded in."""

import pytest
import torch
import torch.nn.functional as F
from transformers import WhisperConfig, WhisperForConditionalGeneration

from whispertune.inference import batch_invariant
from whispertune.inference.batch_invariant import ATTENTION, ROWS, blocked_linear, make_batch_invariant

PROMPT = [1, 5, 6]


def tiny_whisper(device: str = "cpu", dtype=torch.float32) -> WhisperForConditionalGeneration:
    config = WhisperConfig(vocab_size=300, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=64, decoder_start_token_id=1,
                           pad_token_id=0, bos_token_id=0, eos_token_id=0, suppress_tokens=None,
                           begin_suppress_tokens=None, attn_implementation="sdpa")
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(config).to(device, dtype).eval()


@pytest.mark.parametrize("rows", [1, ROWS - 1, ROWS, ROWS + 1, 3 * ROWS + 7])
def test_blocked_linear_is_linear(rows):
    gen = torch.Generator().manual_seed(rows)
    x, w, b = torch.randn(rows, 2, 48, generator=gen), torch.randn(300, 48, generator=gen), torch.randn(300, generator=gen)
    out = blocked_linear(x, w, b)
    assert out.shape == (rows, 2, 300)
    torch.testing.assert_close(out, F.linear(x, w, b))


def test_attention_routing_keeps_the_model_numbers():
    """Decoder attention eager, encoder SDPA, causal mask as eager takes it: the logits of the prompt (where a
    missing causal mask would show) and greedy tokens equal the plain SDPA model's."""
    model = tiny_whisper()
    feats = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(1))
    prompt = torch.tensor([PROMPT] * 3)
    with torch.inference_mode():
        before = model(input_features=feats, decoder_input_ids=prompt).logits
        tokens_before = model.generate(input_features=feats, decoder_input_ids=prompt, max_new_tokens=6)
        model.set_attn_implementation(ATTENTION)  # what make_batch_invariant does on CUDA
        after = model(input_features=feats, decoder_input_ids=prompt).logits
        tokens_after = model.generate(input_features=feats, decoder_input_ids=prompt, max_new_tokens=6)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(tokens_after, tokens_before)


def test_cpu_models_are_left_alone():
    model = tiny_whisper()
    forward = model.proj_out.forward
    make_batch_invariant(model)
    assert model.config._attn_implementation == "sdpa" and model.proj_out.forward == forward


@pytest.mark.gpu
@pytest.mark.parametrize("attention", ["eager", "efficient"])
def test_cuda_logits_do_not_depend_on_the_batch(attention, monkeypatch):
    monkeypatch.setattr(batch_invariant, "DECODER_ATTENTION", attention)
    model = make_batch_invariant(tiny_whisper("cuda", torch.bfloat16))
    assert model.config._attn_implementation == ATTENTION
    # 96 clips: the prompt step (288 rows) spans two blocks of ROWS, the encoder twelve groups of CLIPS
    clips = 96
    feats = torch.randn(clips, 80, 3000, generator=torch.Generator().manual_seed(2)).to("cuda", torch.bfloat16)
    prompt = torch.tensor([PROMPT] * clips, device="cuda")
    with torch.inference_mode():
        batched = model.generate(input_features=feats, decoder_input_ids=prompt, max_new_tokens=12,
                                 output_scores=True, return_dict_in_generate=True)
        for i in (0, 47, clips - 1):
            alone = model.generate(input_features=feats[i:i + 1], decoder_input_ids=prompt[i:i + 1], max_new_tokens=12,
                                   output_scores=True, return_dict_in_generate=True)
            assert torch.equal(alone.sequences[0], batched.sequences[i])
            for step_alone, step_batched in zip(alone.scores, batched.scores):
                assert torch.equal(step_alone[0], step_batched[i])  # bitwise, every step


def test_install_blocks_the_batch_sized_projections_and_keeps_the_numbers():
    """What make_batch_invariant does on CUDA, run on a CPU: the logits stay the model's (3 clips: one group of
    CLIPS, zero-padded, and its frames' keys/values), every decoder projection (and the vocabulary projection)
    runs blocked, the cross-attention keys/values by clips' frames, a deep copy uses its own weights (methods
    bound to their modules, not closures)."""
    import copy

    from whispertune.inference.batch_invariant import (
        _blocked_forward,
        _blocked_frames_forward,
        _grouped_encoder_forward,
        blocked_projections,
        cross_attention_inputs,
        install,
    )

    model = tiny_whisper()
    feats = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(3))
    prompt = torch.tensor([PROMPT] * 3)
    with torch.inference_mode():
        before = model(input_features=feats, decoder_input_ids=prompt).logits
        install(model)
        after = model(input_features=feats, decoder_input_ids=prompt).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    names = {m: n for n, m in model.named_modules()}
    blocked = {names[m] for m in blocked_projections(model)}
    assert "proj_out" in blocked and "model.decoder.layers.0.fc2" in blocked
    assert "model.decoder.layers.1.encoder_attn.q_proj" in blocked
    assert not any("encoder_attn.k_proj" in n or "encoder_attn.v_proj" in n or ".encoder." in n for n in blocked)
    assert all(getattr(m.forward, "__func__", None) is _blocked_forward for m in blocked_projections(model))
    frames = {names[m] for m in cross_attention_inputs(model)}
    assert frames == {f"model.decoder.layers.{i}.encoder_attn.{p}_proj" for i in (0, 1) for p in "kv"}
    assert all(m.forward.__func__ is _blocked_frames_forward for m in cross_attention_inputs(model))
    assert model.model.encoder.forward.__func__ is _grouped_encoder_forward
    twin = copy.deepcopy(model).double()
    with torch.inference_mode():
        assert twin(input_features=feats.double(), decoder_input_ids=prompt).logits.dtype == torch.float64
