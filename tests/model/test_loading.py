"""Model stage, loading: the base in none/int8/nf4 with its training generation config, the processor's
language prefix, device checks, the training dtype."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import stage_config
from whispertune.errors import HardwareError
from whispertune.inference.generation import load_for_inference
from whispertune.inference.options import LoadOptions
from whispertune.model.bnb import is_quantized
from whispertune.model.loading import load_base, load_processor
from whispertune.model.lora import add_lora


@pytest.mark.parametrize("mode, layer", [("none", "Linear"), ("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_load_base_modes_and_training_generation_config(tiny_whisper_dir, mode, layer):
    cfg = stage_config(tiny_whisper_dir, mode)
    model = load_base(cfg.model, cfg.quantization, for_training=True)
    assert type(model.model.encoder.layers[0].self_attn.q_proj).__name__ == layer
    assert is_quantized(model) == (mode != "none")
    assert model.config.use_cache is False
    gen = model.generation_config
    assert gen.forced_decoder_ids is None and not gen.suppress_tokens
    assert (gen.language, gen.task) == ("mr", "transcribe")


def test_load_processor_sets_language_prefix(tiny_whisper_dir):
    processor = load_processor(str(tiny_whisper_dir), "mr", "transcribe")
    prefix = processor.tokenizer.convert_ids_to_tokens(processor.tokenizer.prefix_tokens)
    assert prefix == ["<|startoftranscript|>", "<|mr|>", "<|transcribe|>", "<|notimestamps|>"]


def test_unavailable_device_is_a_hardware_error(tiny_whisper_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(HardwareError, match="no CUDA GPU"):  # the device is resolved where loading starts
        load_for_inference(str(tiny_whisper_dir), options=LoadOptions(quantization="int8", device="cuda"))


def test_training_base_is_loaded_in_the_training_dtype(tiny_whisper_dir):
    cfg = stage_config(tiny_whisper_dir)
    model = load_base(cfg.model, cfg.quantization, for_training=True, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # no fp32 master copy of frozen weights
    lora = add_lora(model, cfg.lora, verbose=False)
    assert {p.dtype for p in lora.parameters() if p.requires_grad} == {torch.float32}  # peft keeps adapters fp32
