"""A shortened `whispertune demo` on the real embedded whisper-base and synthesized Marathi speech."""

from __future__ import annotations

import json

import pytest

from whispertune.demo import DemoSettings, choose_quantization, run_demo


@pytest.mark.embedded
@pytest.mark.synth
def test_short_demo_lowers_wer_and_cer(tmp_path, capsys):
    settings = DemoSettings(
        out_dir=str(tmp_path / "run"), corpus_dir=str(tmp_path / "corpus"), variants=1, train_sentences=32,
        test_sentences=8, pack_utterances=4, epochs=3, batch_size=4, learning_rate=2e-3, lora_r=32,
        engines=("espeak-ng",), max_new_tokens=64, progress=False, scorecard_clips=1,
    )
    result = run_demo(settings)

    assert result.test_clips == 8 and result.train_clips == 32 and result.train_windows < 32  # packed, 1..4 a window
    assert result.after["wer"] < result.before["wer"], (result.before, result.after)
    assert result.after["cer"] < result.before["cer"], (result.before, result.after)
    run = result.run_dir
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "demo.png").stat().st_size > 10_000
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["demo"]["adapted"]["cer"] == pytest.approx(result.after["cer"])
    assert len(result.examples) == 3 and all(ex["reference"] for ex in result.examples)
    card = json.loads((run / "scorecard" / "scorecard.json").read_text(encoding="utf-8"))
    rows = {r["key"]: r for r in card["rows"]}
    assert rows["cer_normalized"]["tuned"] < rows["cer_normalized"]["base"]  # the gain shows on the scorecard too
    assert "scorecard" in capsys.readouterr().out


def test_auto_quantization_on_cpu_says_why():
    mode, why = choose_quantization("auto", "cpu")
    assert mode == "none" and "int8" in why
    assert choose_quantization("none", "cpu") == ("none", "as requested")
