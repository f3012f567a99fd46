"""evaluate / inference: plumbing on a tiny random Whisper, real WER with the embedded whisper-base."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from whispertune.cli import main as cli_main
from whispertune.config import DataConfig
from whispertune.errors import UserError
from whispertune.inference import decode_guards as guards_module
from whispertune.inference.evaluate import evaluate, length_order
from whispertune.inference.generation import generate_batch, load_for_inference
from whispertune.inference.metrics import error_rates
from whispertune.inference.options import DecodingOptions, LoadOptions

SR = 16000
DURATIONS = {"short": 0.6, "long": 2.4, "mid": 1.5, "mid2": 1.2, "longest": 3.0}


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_folder(root: Path, clips: dict[str, tuple[np.ndarray, str]], split: str = "test") -> Path:
    """An audiofolder: root/<split>/metadata.csv + 16 kHz wav files."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        for name, (audio, text) in clips.items():
            sf.write(folder / f"{name}.wav", audio, SR)
            writer.writerow([f"{name}.wav", text])
    return root


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    clips = {name: (tone(sec, 300 + 100 * i), f"उदाहरण वाक्य {name}।") for i, (name, sec) in enumerate(DURATIONS.items())}
    write_folder(root, clips)
    (root / "test" / "broken.wav").write_bytes(b"not audio at all")  # skipped and counted, not fatal
    with open(root / "test" / "metadata.csv", "a", encoding="utf-8") as f:
        f.write("broken.wav,तुटलेली फाइल\n")
    return root


@pytest.fixture(scope="module")
def tiny_loaded(tiny_whisper_dir):
    return load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="mr", task="transcribe", device="cpu"))


def prefix_ids(tokenizer, *tokens: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(tokens))


def test_language_and_task_tokens_in_generated_prefix(tiny_whisper_dir, tiny_loaded):
    feats = np.random.default_rng(0).standard_normal((2, 80, 3000)).astype(np.float32)
    tok = tiny_loaded.processor.tokenizer
    out = generate_batch(tiny_loaded, feats, max_new_tokens=3)
    assert len(out.texts) == 2 and out.languages == ["mr", "mr"]
    expected = prefix_ids(tok, "<|startoftranscript|>", "<|mr|>", "<|transcribe|>", "<|notimestamps|>")
    assert all(seq[:4] == expected for seq in out.sequences)
    assert all(len(seq) <= 4 + 3 for seq in out.sequences)  # max_new_tokens honoured

    hindi = load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="Hindi", task="translate", device="cpu"))
    seq = generate_batch(hindi, feats[:1], max_new_tokens=2).sequences[0]
    assert seq[:4] == prefix_ids(tok, "<|startoftranscript|>", "<|hi|>", "<|translate|>", "<|notimestamps|>")


def test_each_clip_keeps_its_own_token_limit_in_a_batch(tiny_loaded):
    """A short clip decoded beside a long one gets its own duration's token limit: its tokens are those it gets
    alone (random weights never end, so every output runs to its limit)."""
    from whispertune.inference.decode_guards import guarded_generate, token_limit

    feats = np.random.default_rng(1).standard_normal((2, 80, 3000)).astype(np.float32)
    seconds = [0.5, 3.0]
    together = guarded_generate(tiny_loaded, feats, seconds=seconds, max_new_tokens=200, guard=False).generated
    for i in range(2):
        alone = guarded_generate(tiny_loaded, feats[i:i + 1], seconds=seconds[i:i + 1], max_new_tokens=200,
                                 guard=False).generated
        assert together.sequences[i] == alone.sequences[0] and together.texts[i] == alone.texts[0]
    assert len(together.sequences[0]) == 4 + token_limit(0.5, 200) < len(together.sequences[1])


def test_int8_base_generates_without_cast_warnings(tiny_whisper_dir, caplog):
    """An int8 base (bitsandbytes on CPU) generates; its int8 layers get fp16 inputs, so no warning per matmul."""
    loaded = load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="mr", quantization="int8", device="cpu"))
    assert type(loaded.model.model.decoder.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"
    feats = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    with caplog.at_level(logging.WARNING):  # bitsandbytes logs (not warns) the cast
        seq = generate_batch(loaded, feats, max_new_tokens=3).sequences[0]
    assert seq[:4] == prefix_ids(loaded.processor.tokenizer, "<|startoftranscript|>", "<|mr|>", "<|transcribe|>",
                                 "<|notimestamps|>")
    assert not [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]


def test_length_order():
    assert length_order([1.0, 3.0, 2.0, 3.0]) == [1, 3, 2, 0]
    assert length_order([]) == []


def test_evaluate_writes_metrics_and_predictions(tiny_loaded, tone_folder, tmp_path, monkeypatch):
    seen_batches: list[np.ndarray] = []
    real_generate = guards_module.generate_batch

    def recording_generate(loaded, feats, **kwargs):  # the real generation, with its inputs noted
        seen_batches.append(np.asarray(feats))
        return real_generate(loaded, feats, **kwargs)

    monkeypatch.setattr(guards_module, "generate_batch", recording_generate)
    data = DataConfig(source="folder", path=str(tone_folder), cache_dir=str(tmp_path / "cache"))
    result = evaluate(loaded=tiny_loaded, data=data, split="test", decoding=DecodingOptions(batch_size=2, max_new_tokens=4),
                      out_dir=tmp_path / "out", progress=False, guard=False)  # no fallback batches

    assert result.n_utterances == len(DURATIONS)  # broken.wav skipped
    assert [b.shape for b in seen_batches] == [(2, 80, 3000), (2, 80, 3000), (1, 80, 3000)]
    report = json.loads((tmp_path / "out" / "data_report.json").read_text(encoding="utf-8"))
    assert report["splits"]["test"]["skipped_total"] == 1

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    for key in ("wer", "cer", "wer_normalized", "cer_normalized"):
        assert metrics[key] == pytest.approx(getattr(result, key))
    assert metrics["n_utterances"] == 5 and metrics["info"]["language"] == "mr"
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert sorted(p["id"] for p in lines) == sorted(p.id for p in result.predictions)
    assert {p["reference"] for p in lines} == {f"उदाहरण वाक्य {n}।" for n in DURATIONS}
    assert set(lines[0]) == {"id", "reference", "hypothesis", "wer", "cer", "wer_normalized", "cer_normalized"}
    # the corpus rates are those of the written predictions (nothing lost between the two files)
    again = error_rates([p["reference"] for p in lines], [p["hypothesis"] for p in lines], "mr")
    assert again["wer"] == pytest.approx(metrics["wer"]) and again["cer"] == pytest.approx(metrics["cer"])

    # batches went longest first: match each generated row back to its example's duration
    from whispertune.inference.evaluate import prepare_eval_data

    prepared = prepare_eval_data(tiny_loaded, data=data, split="test", dataset=None, max_samples=None, report=None)
    rows = np.asarray(prepared.with_format("numpy")["input_features"])
    durations = prepared["duration"]
    order = [int(np.argmin(np.abs(rows - f[None]).reshape(len(rows), -1).max(axis=1)))
             for b in seen_batches for f in b]
    assert sorted(order) == list(range(5))
    assert [durations[i] for i in order] == sorted(durations, reverse=True)


def test_evaluate_prepared_dataset_and_labels_as_reference(tiny_loaded, tone_folder, tmp_path):
    from whispertune.data.features import prepare_split
    from whispertune.data.sources import load_examples

    data = DataConfig(source="folder", path=str(tone_folder), cache_dir=str(tmp_path / "cache"))
    prepared = prepare_split(load_examples(data, "test"), tiny_loaded.processor, data, language="mr",
                             task="transcribe", split="test", cache_dir=data.cache_dir)
    result = evaluate(loaded=tiny_loaded, dataset=prepared.remove_columns(["text"]),
                      decoding=DecodingOptions(batch_size=8, max_new_tokens=2), max_samples=3, progress=False)
    assert result.n_utterances == 3
    # references decoded from labels, special tokens skipped
    assert all(p.reference.startswith("उदाहरण वाक्य") and "<|" not in p.reference for p in result.predictions)


def test_evaluate_on_cached_encoder_outputs_equals_evaluate_on_features(tiny_loaded, tone_folder, tmp_path):
    """The demo's scoring path: cached encoder outputs, dataset order, through the same evaluate()."""
    from whispertune.data.features import prepare_split
    from whispertune.data.sources import load_examples
    from whispertune.training.encoder_cache import encode_features

    data = DataConfig(source="folder", path=str(tone_folder), cache_dir=str(tmp_path / "cache"))
    prepared = prepare_split(load_examples(data, "test"), tiny_loaded.processor, data, language="mr",
                             task="transcribe", split="test", cache_dir=data.cache_dir)
    hidden = encode_features(tiny_loaded.model, prepared.with_format("numpy")["input_features"], progress=False)
    decoding = DecodingOptions(batch_size=2, max_new_tokens=6)
    plain = evaluate(loaded=tiny_loaded, dataset=prepared, decoding=decoding, sort_by_length=False, progress=False)
    cached = evaluate(loaded=tiny_loaded, dataset=prepared, decoding=decoding, sort_by_length=False,
                      encoder_outputs=hidden, progress=False)
    assert [p.hypothesis for p in cached.predictions] == [p.hypothesis for p in plain.predictions]
    assert any(p.hypothesis for p in plain.predictions)
    assert (cached.wer, cached.cer) == (plain.wer, plain.cer)
    with pytest.raises(UserError, match="encoder_outputs has 2 rows"):
        evaluate(loaded=tiny_loaded, dataset=prepared, encoder_outputs=hidden[:2], progress=False)


def test_evaluate_without_data_is_a_user_error(tiny_loaded):
    with pytest.raises(UserError, match="needs a data source"):
        evaluate(loaded=tiny_loaded, progress=False)


def test_adapter_supplies_base_language_and_task(tiny_whisper_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    base = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # lora_B starts at zero: make the adapter change the output
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    meta = {"base_model": str(tiny_whisper_dir), "language": "hi", "task": "translate"}
    (adapter / "whispertune.json").write_text(json.dumps(meta), encoding="utf-8")

    loaded = load_for_inference(adapter=str(adapter), options=LoadOptions(device="cpu"))
    assert loaded.info["model"] == str(tiny_whisper_dir)
    assert (loaded.info["language"], loaded.info["task"]) == ("hi", "translate")
    assert type(loaded.model).__name__ == "PeftModel" and not loaded.model.training
    feats = np.random.default_rng(1).standard_normal((1, 80, 3000)).astype(np.float32)
    plain = load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="hi", task="translate", device="cpu"))
    with_adapter = generate_batch(loaded, feats, max_new_tokens=6).sequences[0]
    assert with_adapter[:3] == generate_batch(plain, feats, max_new_tokens=6).sequences[0][:3]
    enc = lambda m: m.get_encoder()(torch.as_tensor(feats)).last_hidden_state  # noqa: E731
    with torch.no_grad():
        assert not torch.allclose(enc(loaded.model), enc(plain.model))

    # without whispertune.json the base comes from peft's adapter_config.json
    (adapter / "whispertune.json").unlink()
    again = load_for_inference(adapter=str(adapter), options=LoadOptions(device="cpu"))
    assert again.info["model"] == str(tiny_whisper_dir) and again.info["task"] == "transcribe"
    with pytest.raises(UserError, match="no adapter_config.json"):
        load_for_inference(adapter=str(tmp_path), options=LoadOptions(device="cpu"))


def test_cli_evaluate(tiny_whisper_dir, tone_folder, tmp_path, capsys):
    code = cli_main(["evaluate", "--model", str(tiny_whisper_dir), "--language", "mr", "--max-new-tokens", "3",
                     "--out", str(tmp_path / "cli"), "--data.path", str(tone_folder),
                     "--data.cache_dir", str(tmp_path / "cache"), "--batch-size", "4"])
    assert code == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text("utf-8"))["n_utterances"] == 5
    assert "WER" in capsys.readouterr().out
    assert cli_main(["evaluate", "--model", str(tiny_whisper_dir)]) == 2  # no data: one-line error


# --- the real embedded whisper-base on synthesized English -----------------------------------------

ENGLISH = [
    "The weather is nice today.",
    "Please open the window.",
    "I would like a cup of coffee.",
    "She reads a book every evening.",
    "We are going to the market.",
    "The children are playing outside.",
]


def speak(text: str, path: Path) -> np.ndarray:
    """espeak-ng (en-us) speech resampled to 16 kHz mono with 0.5 s of silence each side, written to `path`.

    espeak-ng starts speaking on the very first sample; recordings have a lead-in, and without one
    whisper-base misses the first word more often (measured: 18 % vs 12 % normalized WER here).
    """
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True, capture_output=True)
    audio, rate = sf.read(raw, dtype="float32")
    raw.unlink()
    pad = np.zeros(SR // 2, dtype=np.float32)
    audio = np.concatenate([pad, soxr.resample(audio, rate, SR).astype(np.float32), pad])
    sf.write(path, audio, SR)
    return audio


@pytest.mark.embedded
@pytest.mark.synth
def test_embedded_whisper_base_english_wer(tmp_path):
    folder = tmp_path / "en" / "test"
    folder.mkdir(parents=True)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        for i, text in enumerate(ENGLISH):
            speak(text, folder / f"s{i}.wav")
            writer.writerow([f"s{i}.wav", text])
    data = DataConfig(source="folder", path=str(tmp_path / "en"), cache_dir=str(tmp_path / "cache"))
    result = evaluate("embedded:whisper-base", data=data, load=LoadOptions(language="en"),
                      decoding=DecodingOptions(batch_size=6, max_new_tokens=64), out_dir=tmp_path / "out", progress=False)
    print(f"embedded whisper-base on espeak-ng English: WER {result.wer:.1f} raw, "
          f"{result.wer_normalized:.1f} normalized; CER {result.cer_normalized:.1f} normalized")
    for p in result.predictions:
        print(f"  {p.reference!r} -> {p.hypothesis!r}")
    assert result.n_utterances == len(ENGLISH)
    assert result.wer_normalized < 20.0


def test_feature_block_reads_rows_in_the_asked_order(tiny_loaded, tone_folder, tmp_path):
    from whispertune.config import DataConfig
    from whispertune.data.report import DataReport
    from whispertune.inference.evaluate import feature_block, prefetched, prepare_eval_data

    data = DataConfig(source="folder", path=str(tone_folder), cache_dir=str(tmp_path / "cache"))
    prepared = prepare_eval_data(tiny_loaded, data=data, split="test", dataset=None, max_samples=None,
                                 report=DataReport()).sort("duration", reverse=True)
    rows = list(range(len(prepared)))[::-1]
    expected = np.asarray(prepared.with_format("numpy", columns=["input_features"])[rows]["input_features"])
    block = feature_block(prepared, rows)
    assert block.dtype == np.float32 and block.shape == expected.shape and np.array_equal(block, expected)
    chunks = list(prefetched(lambda r: feature_block(prepared, r), [rows[:1], rows[1:]]))
    assert np.array_equal(np.concatenate(chunks), expected)


@pytest.mark.parametrize("timestamps", [False, True])
def test_fallback_decodes_pick_no_timestamps_and_keep_their_batch(tiny_whisper_dir, timestamps):
    """A looping clip whose sampled fallback would emit timestamp tokens: transformers would read a pair of them as
    a segment's end and decode the rest of the window in a smaller batch, which broke the per-clip seeds (seen on
    an H200 with random weights). Without timestamps the fallback picks none; with them each clip's fallback runs
    alone. Either way a batch gives each clip's result alone."""
    from whispertune.inference.decode_guards import guarded_generate

    loaded = load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="mr", device="cpu"))
    tok, gen = loaded.processor.tokenizer, loaded.model.generation_config
    word, first_timestamp = tok.encode(" the", add_special_tokens=False)[0], gen.no_timestamps_token_id + 1
    bias = torch.zeros(loaded.model.config.vocab_size)
    bias[word], bias[first_timestamp:] = 30.0, 29.0  # greedy repeats the word; sampling would take timestamps
    loaded.model.proj_out.register_forward_hook(lambda module, args, out: out + bias)
    feats = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(4))
    names = ["a.mp3", "b.mp3", "c.mp3"]
    options = {"return_timestamps": True} if timestamps else None
    together = guarded_generate(loaded, feats, max_new_tokens=12, names=names, options=options)
    assert all(together.looped) and together.redecoded >= 3
    if not timestamps:
        assert all(t < first_timestamp for seq in together.generated.sequences for t in seq[4:])
    for i in range(3):
        alone = guarded_generate(loaded, feats[i:i + 1], max_new_tokens=12, names=names[i:i + 1], options=options)
        assert alone.generated.sequences[0] == together.generated.sequences[i]
        assert alone.temperatures[0] == together.temperatures[i]


def test_guard_runs_the_encoder_once_and_decodes_the_same(tiny_whisper_dir, monkeypatch):
    """The guard hands the encoder's outputs of a batch to its greedy and fallback decodes instead of features
    (inference/decode_guards.reusable_encoding): the tokens are those of decoding from the features each time."""
    from whispertune.inference import decode_guards

    loaded = load_for_inference(str(tiny_whisper_dir), options=LoadOptions(language="mr", device="cpu"))
    word = loaded.processor.tokenizer.encode(" the", add_special_tokens=False)[0]
    bias = torch.zeros(loaded.model.config.vocab_size)
    bias[word] = 30.0  # greedy loops: every clip goes through the fallback
    loaded.model.proj_out.register_forward_hook(lambda module, args, out: out + bias)
    feats = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(5))
    assert decode_guards.reusable_encoding(loaded, feats, None)
    assert not decode_guards.reusable_encoding(loaded, feats, {"return_timestamps": True})
    calls = []
    encoder = loaded.model.get_encoder()
    encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    reused = decode_guards.guarded_generate(loaded, feats, max_new_tokens=10, names=["a", "b", "c"])
    assert all(reused.looped) and reused.redecoded >= 3 and len(calls) == 1
    monkeypatch.setattr(decode_guards, "reusable_encoding", lambda *args: False)
    again = decode_guards.guarded_generate(loaded, feats, max_new_tokens=10, names=["a", "b", "c"])
    assert len(calls) > 2  # the features path: the encoder runs in every decode
    assert again.generated.sequences == reused.generated.sequences and again.temperatures == reused.temperatures
