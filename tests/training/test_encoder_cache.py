"""Frozen-encoder training with cached encoder outputs: same numbers as the uncached path, encoded once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.data.collate import SpeechCollator
from whispertune.inference.generation import Loaded, generate_batch
from whispertune.training.encoder_cache import CachedEncoderDataset, encode_features
from whispertune.training.trainer import train


def _features(processor, n=3, seed=0):
    rng = np.random.default_rng(seed)
    audio = [rng.standard_normal(16000 * (i + 1)).astype(np.float32) * 0.1 for i in range(n)]
    return processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features


def test_cached_forward_and_generate_equal_the_plain_model(tiny_whisper_dir):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    feats = _features(processor)
    hidden = encode_features(model, feats, batch_size=2, progress=False)
    assert hidden.shape == (3, 1500, model.config.d_model) and hidden.dtype == torch.float16
    with torch.no_grad():
        direct = model.model.encoder(torch.as_tensor(feats)).last_hidden_state
    torch.testing.assert_close(hidden.float(), direct, atol=2e-3, rtol=2e-3)  # float16 storage

    # the collator turns cached rows into `encoder_outputs`; the loss equals the uncached one
    labels = [[50258, 50259, 50359, 50363, 400, 401, 50257], [50258, 50259, 50359, 50363, 402, 50257],
              [50258, 50259, 50359, 50363, 403, 404, 405, 50257]]
    collator = SpeechCollator(processor, model.config.decoder_start_token_id)
    cached = collator([CachedEncoderDataset(labels, hidden)[i] for i in range(3)])
    plain = collator([{"input_features": feats[i], "labels": labels[i]} for i in range(3)])
    assert "input_features" not in cached and isinstance(cached["encoder_outputs"], tuple)
    with torch.no_grad():
        loss_cached = model(**cached).loss
        loss_plain = model(**plain).loss
    assert torch.isclose(loss_cached, loss_plain, rtol=1e-3)

    # with the cross-attention keys/values cached as well, the loss is the same
    from whispertune.training.encoder_cache import CrossKVCollator, cross_attention_kv

    kv = cross_attention_kv(model, hidden, progress=False)
    assert kv.shape == (3, model.config.decoder_layers, 2, model.config.decoder_attention_heads, 1500,
                        model.config.d_model // model.config.decoder_attention_heads)
    rows = [CachedEncoderDataset(labels, hidden, cross_kv=kv)[i] for i in range(3)]
    with_kv = CrossKVCollator(collator)(rows)
    assert with_kv["use_cache"] is True
    with torch.no_grad():
        loss_kv = model(**with_kv).loss
    assert torch.isclose(loss_kv, loss_cached, rtol=1e-3)

    # generation from cached encoder outputs: the same loop as from features (inference.generation)
    loaded = Loaded(model, processor, {"device": "cpu", "language": "en", "task": "transcribe"})
    texts = generate_batch(loaded, hidden.float(), encoded=True, max_new_tokens=6).texts
    with torch.no_grad():
        ref = model.generate(torch.as_tensor(feats), language="en", task="transcribe", max_new_tokens=6)
    assert texts == [t.strip() for t in processor.tokenizer.batch_decode(ref, skip_special_tokens=True)]


DECODER_TARGETS = "self_attn.q_proj,self_attn.k_proj,self_attn.v_proj,self_attn.out_proj,encoder_attn.q_proj,fc1,fc2"


@pytest.mark.synth
def test_frozen_encoder_training_lowers_loss_and_reuses_the_cache(trainable_whisper_dir, speech_folder, tmp_path):
    def overrides(out, *extra):
        return train_overrides(trainable_whisper_dir, speech_folder, tmp_path / out, "none", 12) + [
            "train.freeze_encoder=true", "train.cache_encoder_outputs=true", "data.eval_split=null",
            f"lora.target_modules={DECODER_TARGETS}", *extra]

    result = train(load_config(None, overrides("run")))
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    caches = list((tmp_path / "features" / "encoder").glob("encoder-*.safetensors"))
    assert len(caches) == 1
    stamp = caches[0].stat().st_mtime_ns

    # LoRA sits on the decoder only
    from safetensors.torch import load_file

    names = list(load_file(result.adapter_dir / "adapter_model.safetensors"))
    assert names and all(".decoder." in n for n in names)

    # a second run reads the cached encoder outputs instead of recomputing them, and with the
    # cross-attention keys/values cached too it takes the same steps
    again = train(load_config(None, overrides("run2", "train.cache_cross_attention=true")))
    assert caches[0].stat().st_mtime_ns == stamp
    again_losses = [h["loss"] for h in again.log_history if "loss" in h]
    assert again_losses == pytest.approx(losses, rel=1e-4)


def test_cross_attention_cache_refuses_adapted_keys(tiny_whisper_dir):
    from whispertune.config import LoraConfig
    from whispertune.errors import ConfigError
    from whispertune.model.lora import add_lora
    from whispertune.training.encoder_cache import cross_attention_kv

    with pytest.raises(ConfigError, match="cross-attention keys/values must stay frozen"):
        load_config(None, ["train.freeze_encoder=true", "train.cache_encoder_outputs=true",
                           "train.cache_cross_attention=true", "lora.target_modules=q_proj,v_proj"])
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    peft_model = add_lora(model, LoraConfig(target_modules=["encoder_attn.v_proj"]), freeze_encoder=True, verbose=False)
    with pytest.raises(ValueError, match="without adapters"):
        cross_attention_kv(peft_model, torch.zeros(1, 1500, model.config.d_model), progress=False)
