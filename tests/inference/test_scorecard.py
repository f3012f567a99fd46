"""The repetition guard on a real looping decoder, and `whispertune scorecard` end to end: on a tiny random
Whisper with a random LoRA adapter (plumbing, files, CLI), and on the embedded whisper-base (real numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from whispertune.cli import main as cli_main
from whispertune.inference.decode_guards import guarded_generate, is_looping
from whispertune.inference.generation import generate_batch, load_for_inference
from whispertune.inference.options import LoadOptions
from whispertune.inference.scorecard_report import ROWS

SR = 16000


def write_folder(root, clips, split="test"):
    folder = root / split
    folder.mkdir(parents=True)
    lines = ["file_name,text"]
    for i, (audio, text) in enumerate(clips):
        sf.write(folder / f"c{i}.wav", audio, SR)
        lines.append(f"c{i}.wav,{text}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tone(seconds, freq):
    return (0.2 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def save_adapter(base_dir, out, scale: float):
    """A LoRA adapter on `base_dir` whose B matrices are `scale`-sized noise (0: the base itself)."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    model = get_peft_model(WhisperForConditionalGeneration.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, scale) if scale else param.zero_()
    model.save_pretrained(out)
    (out / "whispertune.json").write_text(json.dumps({"base_model": str(base_dir), "language": "mr",
                                                      "task": "transcribe"}), encoding="utf-8")
    return out


def test_guard_redecodes_only_looping_outputs(tiny_whisper_dir):
    loaded = load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="mr", device="cpu"))
    feats = np.random.default_rng(0).standard_normal((3, 80, 3000)).astype(np.float32)
    greedy = generate_batch(loaded, feats, max_new_tokens=12)
    looped = [is_looping(t) for t in greedy.texts]
    assert any(looped), "a random decoder repeats itself: the guard needs a looping output to act on"
    unguarded = guarded_generate(loaded, feats, max_new_tokens=12, guard=False)
    assert unguarded.generated.texts == greedy.texts and unguarded.looped == looped and unguarded.redecoded == 0
    guarded = guarded_generate(loaded, feats, max_new_tokens=12)
    assert guarded.looped == looped and guarded.redecoded >= sum(looped)
    for i, loops in enumerate(looped):
        if not loops:  # outputs that did not loop are the greedy ones, untouched
            assert guarded.generated.texts[i] == greedy.texts[i] and guarded.temperatures[i] == 0.0
    assert any(t > 0 for t in guarded.temperatures)  # a sampled decode replaced a looping one
    again = guarded_generate(loaded, feats, max_new_tokens=12)
    assert again.generated.texts == guarded.generated.texts  # seeded: reproducible
    for i in range(len(feats)):  # seeded per clip: each clip's fallback is the one it gets decoded alone
        alone = guarded_generate(loaded, feats[i:i + 1], max_new_tokens=12)
        assert alone.generated.texts[0] == guarded.generated.texts[i]
        assert alone.temperatures[0] == guarded.temperatures[i]
    short = guarded_generate(loaded, feats[:1], seconds=[0.0], max_new_tokens=12, guard=False)
    assert len(short.generated.sequences[0]) <= 4 + 16  # prompt + the token limit of an empty clip


@pytest.mark.synth
def test_cli_scorecard_on_a_tiny_model(tiny_whisper_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WHISPERTUNE_CACHE", str(tmp_path / "cache"))  # synthesized language-ID clips go here
    data = write_folder(tmp_path / "mr", [(tone(1.5, 300 + 50 * i), f"उदाहरण वाक्य {i}") for i in range(3)])
    english = write_folder(tmp_path / "en", [(tone(1.0, 500), "a short English line")])
    run = tmp_path / "run"
    save_adapter(tiny_whisper_dir, run / "adapter", scale=0.5)
    out = tmp_path / "card"
    code = cli_main(["scorecard", str(run), "--data.path", str(data), "--english", str(english), "--out", str(out),
                     "--clips", "2", "--test-clips", "2", "--long-form-seconds", "20", "--max-new-tokens", "3",
                     "--device", "cpu", "--fail-on", "forgetting=1000,loop_rate=1000"])
    assert code == 0, capsys.readouterr()
    card = json.loads((out / "scorecard.json").read_text("utf-8"))
    keys = [r["key"] for r in card["rows"]]
    assert keys == [k for k, *_ in ROWS]  # every probe ran
    assert card["info"]["adapter"] == str(run / "adapter") and card["info"]["base"] == str(tiny_whisper_dir)
    # no English references for these sentences (no chrF), and a 20 s file has no speech 20-30 s into a window
    empty = [r["key"] for r in card["rows"] if r["base"] is None or r["tuned"] is None]
    assert empty == ["translate_chrf", "longform_deletion_20-30s"]
    assert any("no English references" in n for n in card["info"]["notes"])
    expected = {d["expected"] for d in card["details"]["tuned"]["langid"]}
    assert {"mr", "en", "hi", "de"} <= expected
    assert "test WER, script-safe normalizer" in (out / "scorecard.md").read_text("utf-8")
    assert (out / "scorecard.png").stat().st_size > 0
    assert cli_main(["scorecard", str(run), "--data.path", str(data), "--out", str(out), "--fail-on", "wer=x"]) == 2


@pytest.mark.embedded
@pytest.mark.synth
@pytest.mark.slow
def test_scorecard_of_a_no_op_adapter_on_whisper_base_changes_nothing(tmp_path):
    """An adapter whose LoRA B matrices are zero is the base: every row must come out the same for both."""
    from whispertune.config import DataConfig
    from whispertune.data.synth import synthesize_corpus
    from whispertune.inference.scorecard import scorecard
    from whispertune.inference.scorecard_settings import ScorecardSettings
    from whispertune.model.loading import resolve_name

    corpus = tmp_path / "mr"
    synthesize_corpus(corpus, "mr", ["आज हवा खूप दमट आहे.", "मला एक कप कॉफी हवी आहे."], splits=("test",),
                      variants=1, engines=("espeak-ng",), progress=False)
    adapter = save_adapter(resolve_name("embedded:whisper-base"), tmp_path / "adapter", scale=0.0)
    settings = ScorecardSettings(clips=2, test_clips=2, long_form_seconds=25, langid_languages=("de",),
                                 max_new_tokens=48, corpus_dir=str(tmp_path / "corpora"), progress=False)
    card = scorecard(str(adapter), data=DataConfig(source="folder", path=str(corpus)), device="cpu",
                     settings=settings)
    for row in card.rows:
        assert row.base == pytest.approx(row.tuned), row.key
    assert card.row("english_wer").base < 50  # whisper-base on espeak-ng English
    # whisper-base tells espeak-ng English apart (its Marathi and German voices it may take for other languages)
    english = [d for d in card.details["base"]["langid"] if d["expected"] == "en"]
    assert english and all(d["detected"] == "en" for d in english)
    assert card.row("langid_accuracy").base > 0
    assert card.row("translate_chrf").base is not None  # the shipped Marathi translations were found
