"""Model card content and `whispertune push` against an unreachable Hub (a real connection, refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from whispertune.errors import UserError
from whispertune.interop.hub import CARD_MARKER, describe, model_card, push


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_whisper_dir) -> Path:
    """A run directory as training leaves it: config.yaml, metrics.json and adapter/ (tiny random base)."""
    from whispertune.config import Config, LoraConfig
    from whispertune.model.loading import load_base, load_processor
    from whispertune.model.lora import add_lora
    from whispertune.training.plan import resolve_plan
    from whispertune.training.trainer import write_adapter

    run = tmp_path_factory.mktemp("run")
    cfg = Config()
    cfg.model.name_or_path, cfg.model.language = str(tiny_whisper_dir), "marathi"
    cfg.quantization.mode = "int8"
    cfg.lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    cfg.data.path, cfg.train.learning_rate, cfg.train.max_steps = "data/mr-corpus", 5e-4, 300
    plan = resolve_plan(cfg, device="cpu")
    model = add_lora(load_base(plan.model, cfg.quantization.__class__(mode="none"), for_training=True, device="cpu"),
                     cfg.lora, verbose=False)
    write_adapter(model, load_processor(plan.model_path, plan.language, "transcribe"), run / "adapter", plan)
    (run / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    metrics = {"global_step": 300, "eval": {"eval_loss": 0.4123, "eval_wer": 23.5}, "final_train_loss": 0.31}
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run


def test_adapter_card(run_dir, tiny_whisper_dir):
    card = model_card(run_dir / "adapter", "someone/whisper-mr-lora")
    front = yaml.safe_load(card.split("---")[1])
    assert front["language"] == ["mr"] and front["library_name"] == "peft"
    assert "lora" in front["tags"] and front["pipeline_tag"] == "automatic-speech-recognition"
    assert CARD_MARKER in card and "# whisper-mr-lora" in card
    assert f"LoRA adapter for `{tiny_whisper_dir}` (language: marathi, task: transcribe)" in card
    assert "`data/mr-corpus`" in card  # data
    assert "learning_rate: 0.0005" in card and "max_steps: 300" in card and "mode: int8" in card  # training config
    assert "- q_proj" in card and "r: 4" in card
    assert "| eval.eval_wer | 23.5 |" in card and "| eval.eval_loss | 0.4123 |" in card  # metrics
    assert 'adapter = "someone/whisper-mr-lora"' in card and "PeftModel.from_pretrained(" in card  # peft usage
    assert "whispertune transcribe clip.wav --adapter someone/whisper-mr-lora" in card


def test_ct2_card_and_kinds(tmp_path, run_dir):
    export = tmp_path / "ct2"
    export.mkdir()
    (export / "model.bin").write_bytes(b"\0")
    parity = {"n_clips": 6, "wer_transformers": 9.76, "wer_client": 9.76, "margin": 1.0, "identical": 5,
              "client": "faster-whisper", "clips": "synthesized"}
    (export / "whispertune.json").write_text(json.dumps({"kind": "ct2", "quantization": "int8", "language": "en",
                                                         "base_model": "openai/whisper-base", "task": "transcribe",
                                                         "run_dir": str(run_dir), "parity": parity}))
    card = model_card(export, "me/whisper-ct2")
    assert describe(export)["kind"] == "ct2"
    assert "CTranslate2 (int8) export" in card and "base_model: openai/whisper-base" in card
    assert 'WhisperModel("me/whisper-ct2", device="cpu", compute_type="int8")' in card
    assert "WER whispertune (transformers) 9.76, faster-whisper 9.76" in card and "identical transcripts 5/6" in card
    assert "| eval.eval_wer | 23.5 |" in card
    with pytest.raises(UserError, match="nothing to publish"):
        describe(tmp_path)


def test_push_unreachable_hub_raises_user_error(run_dir, monkeypatch):
    adapter = run_dir / "adapter"
    # a real connection attempt to a closed local port (huggingface_hub reads HF_ENDPOINT at import,
    # so the API object gets it explicitly here; the CLI test below sets the environment)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(UserError, match="cannot push .* someone/x"):
        push(adapter, "someone/x", token="hf_not_a_real_token")
    assert CARD_MARKER in (adapter / "README.md").read_text()  # the card is written before the upload


def test_cli_push_unreachable_hub(run_dir):
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_not_a_real_token",
               HF_HUB_ETAG_TIMEOUT="3", HF_HUB_DOWNLOAD_TIMEOUT="3")
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-m", "whispertune.cli", "push", "--adapter", str(run_dir / "adapter"),
                           "--repo-id", "someone/x", "--private"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whispertune: error: cannot push"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_readme_of_the_user_is_kept(tmp_path, run_dir):
    import shutil

    folder = shutil.copytree(run_dir / "adapter", tmp_path / "adapter")
    (folder / "README.md").write_text("my own card\n")
    with pytest.raises(UserError):
        push(folder, "someone/y", token="hf_not_a_real_token")  # offline in tests: fails, after the card step
    assert (folder / "README.md").read_text() == "my own card\n"


def test_card_shows_the_checkpoint_select_best_kept(tmp_path):
    """Under train.select_best the card's WER/CER is the kept checkpoint's, with its step, not the last one's."""
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    best = {"metric": "eval_wer", "step": 200, "score": 21.5, "checkpoint": "checkpoint-200",
            "eval": {"eval_loss": 0.5, "eval_wer": 21.5, "eval_cer": 7.25}}
    metrics = {"global_step": 300, "eval": {"eval_wer": 23.5, "eval_cer": 8.0}, "best": best}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    card = model_card(tmp_path / "adapter")
    assert ("Measured on the evaluation split: WER 21.50, CER 7.25 at step 200 (`checkpoint-200`), the checkpoint "
            "`train.select_best` kept as this model (lowest eval_wer). The last evaluation, at step 300: WER 23.50, "
            "CER 8.00.") in card
    best.update(metric="eval_loss", score=0.5, eval={"eval_loss": 0.5})  # chosen by loss, no WER measured
    (tmp_path / "metrics.json").write_text(json.dumps({"global_step": 300, "eval": {"eval_loss": 0.6}, "best": best}))
    assert "Measured on the evaluation split: eval_loss 0.5 at step 200 (`checkpoint-200`)" in model_card(tmp_path / "adapter")
