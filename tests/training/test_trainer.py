"""End-to-end LoRA training on real audio files (espeak-ng speech) with a tiny random Whisper on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.errors import HardwareError
from whispertune.training.checkpoints import checkpoint_step, complete_checkpoints, full_weight_files
from whispertune.training.plan import resolve_precision
from whispertune.training.trainer import train


@pytest.mark.synth
@pytest.mark.parametrize("mode", ["none", "int8", "nf4"])
def test_training_lowers_loss_and_writes_run_dir(mode, trainable_whisper_dir, speech_folder, tmp_path):
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    cfg = load_config(None, train_overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", mode, 15))
    cfg.data.eval_split = None
    result = train(cfg)

    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 15 and result.global_step == 15
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    run = result.run_dir
    for name in ("config.yaml", "data_report.json", "metrics.json", "train_log.jsonl", "loss.png"):
        assert (run / name).is_file(), name
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in logged if "loss" in e] == losses
    assert json.loads((run / "data_report.json").read_text())  # written by the data path
    assert any(run.joinpath("logs").iterdir())  # TensorBoard event file

    checkpoints = complete_checkpoints(run / "checkpoints")
    # every save_steps (7) and at the last step
    assert [checkpoint_step(c) for c in checkpoints] == [7, 14, 15]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(c.name for c in checkpoints)
    assert not (run / "checkpoints" / ".tmp").exists()
    for ckpt in checkpoints:
        assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    assert full_weight_files(run / "checkpoints") == [] and full_weight_files(result.adapter_dir) == []

    meta = json.loads((result.adapter_dir / "whispertune.json").read_text())
    assert meta["base_model"] == str(trainable_whisper_dir) and meta["quantization"] == mode
    assert (meta["language"], meta["task"]) == ("en", "transcribe")
    card = (result.adapter_dir / "README.md").read_text()  # written after metrics.json: ours, not peft's template
    assert "<!-- written by whispertune -->" in card and "library_name: peft" in card
    assert (result.adapter_dir / "generation_config.json").is_file()
    # the final adapter loads with plain peft on a plain base and changes its output
    base = WhisperForConditionalGeneration.from_pretrained(trainable_whisper_dir)
    feats = torch.randn(1, 80, 3000)
    before = base(input_features=feats, decoder_input_ids=torch.tensor([[50258]])).logits
    tuned = PeftModel.from_pretrained(base, result.adapter_dir)
    after = tuned(input_features=feats, decoder_input_ids=torch.tensor([[50258]])).logits
    assert not torch.allclose(before, after)


def test_precision_choice_by_hardware():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU choices")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(HardwareError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


def test_dataloader_workers_auto_by_device():
    from whispertune.training.arguments import dataloader_workers

    assert dataloader_workers(-1, "cpu") == 0 and dataloader_workers(-1, "cuda") >= 1
    assert dataloader_workers(3, "cpu") == 3 and dataloader_workers(0, "cuda") == 0


def test_evaluation_by_generation_is_bounded_and_longest_first():
    import datasets

    from whispertune.training.trainer import GENERATION_MARGIN, _generation_order

    ds = datasets.Dataset.from_dict({"labels": [[1] * 5, [1] * 9, [1] * 7], "duration": [1.0, 3.0, 2.0]})
    ordered, length = _generation_order(ds, limit=128)
    assert length == 9 + GENERATION_MARGIN and ordered["duration"] == [3.0, 2.0, 1.0]
    assert _generation_order(ds, limit=10)[1] == 10


@pytest.mark.synth
def test_epoch_evaluation_by_generation_and_stage_times(trainable_whisper_dir, speech_folder, tmp_path):
    cfg = load_config(None, train_overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", "none", 4)
                      + ["train.max_steps=-1", "train.num_epochs=2", "train.eval_strategy=epoch",
                         "train.save_strategy=no", "train.predict_with_generate=true", "data.eval_split=train",
                         "train.report_to=[]"])
    result = train(cfg)
    evals = [h for h in result.log_history if "eval_wer" in h]
    assert len(evals) == 2 and all(h["eval_n_utterances"] == 6 for h in evals)
    assert set(result.seconds) == {"load_model", "prepare_data", "train_steps", "evaluate"}
    assert all(v >= 0 for v in result.seconds.values()) and result.seconds["evaluate"] > 0
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["seconds"].keys() == result.seconds.keys()


@pytest.mark.synth
def test_bf16_base_evaluates_by_generation(trainable_whisper_dir, speech_folder, tmp_path):
    """The frozen base is loaded in the training dtype: generation during evaluation must feed it that dtype
    (the trainer's batches are float32; on a GPU this failed with 'Input type (float) and bias type (BFloat16)')."""
    cfg = load_config(None, train_overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", "none", 2)
                      + ["train.precision=bf16", "train.eval_strategy=steps", "train.eval_steps=2",
                         "train.save_strategy=no", "train.predict_with_generate=true", "data.eval_split=train",
                         "train.report_to=[]"])
    result = train(cfg)
    assert any("eval_wer" in h for h in result.log_history)
