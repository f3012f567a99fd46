"""Artifacts that load elsewhere: an adapter and its merge, trained on `embedded:whisper-base`, loaded by the
snippets of their own model cards, run as written in a process with plain transformers + peft, an empty HOME,
no whispertune cache and no Hub (only an offline Hugging Face cache holding openai/whisper-base's files).

The same check runs under transformers 4.x when a Python with it is given (`WHISPERTUNE_T4_PYTHON`,
e.g. /tmp/venv-t4/bin/python made as docs/deploy.md says).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import make_adapter
from whispertune.inference.generation import generate_batch, load_for_inference
from whispertune.inference.options import LoadOptions
from whispertune.interop.merge import merge
from whispertune.interop.parity import read_clips
from whispertune.model.loading import resolve_name
from whispertune.pretrained.embedded import EMBEDDED, embedded_origin

pytestmark = [pytest.mark.embedded, pytest.mark.synth]
BASE = "embedded:whisper-base"
SENTENCES = ["The weather is nice today.", "Please open the window."]

# Runs in the clean process: every clip through each card's python snippet, exactly as the card prints it.
DRIVER = """
import contextlib, io, json, shutil, sys
snippets, clips = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for kind, (code, n_clips) in snippets.items():
    out[kind] = []
    for clip in clips[:n_clips]:
        shutil.copyfile(clip, "clip.wav")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, {})
        out[kind].append(printed.getvalue().strip())
import transformers
print(json.dumps({"texts": out, "transformers": transformers.__version__,
                  "whispertune_imported": "whispertune" in sys.modules}))
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    from whispertune.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("clips")
    synthesize_corpus(out, "en", SENTENCES, splits=("test",), variants=1, engines=("espeak-ng",), progress=False)
    return [c.path for c in read_clips(out)]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    return make_adapter(BASE, tmp_path_factory.mktemp("run") / "run", language="en", scale=0.03)


@pytest.fixture(scope="module")
def merged_dir(adapter_dir, tmp_path_factory) -> Path:
    return merge(adapter_dir, tmp_path_factory.mktemp("m") / "merged")


def _python_snippet(card: str) -> str:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)[0]


def _whispertune_texts(adapter: Path, clips: list[str]) -> list[str]:
    from whispertune.data.audio import SAMPLE_RATE, load_audio

    loaded = load_for_inference(adapter=str(adapter), options=LoadOptions(device="cpu"))
    feats = loaded.processor.feature_extractor([load_audio(c) for c in clips], sampling_rate=SAMPLE_RATE,
                                               return_tensors="np").input_features
    return generate_batch(loaded, feats).texts


def _offline_home(tmp: Path) -> dict[str, str]:
    """HOME/caches in `tmp`, the Hub unreachable, openai/whisper-base's files in an offline HF cache (copies of
    the embedded weights, which are the same weights)."""
    snapshot = tmp / "hf" / "hub" / "models--openai--whisper-base" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    source = Path(resolve_name(BASE))
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copyfile(source / name, snapshot / name)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "WHISPERTUNE", "XDG_", "PYTHON"))}
    return env | {"HOME": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache"), "HF_HOME": str(tmp / "hf"),
                  "HF_HUB_OFFLINE": "1", "WHISPERTUNE_CACHE": str(tmp / "no-whispertune-cache")}


def _run_cards(python: str, adapter_dir: Path, merged_dir: Path, clips: list[str], tmp: Path) -> dict:
    # the merged model's pipeline on one clip only (each run of a snippet loads its model again)
    snippets = {"adapter": (_python_snippet((adapter_dir / "README.md").read_text()), len(clips)),
                "merged": (_python_snippet((merged_dir / "README.md").read_text()), 1)}
    work = tmp / "work"
    work.mkdir()
    proc = subprocess.run([python, "-c", DRIVER, json.dumps(snippets), json.dumps(clips)], cwd=work,
                          env=_offline_home(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp / "no-whispertune-cache").exists()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_adapter_files_name_a_portable_base(adapter_dir):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    meta = json.loads((adapter_dir / "whispertune.json").read_text())
    assert config["base_model_name_or_path"] == "openai/whisper-base" == EMBEDDED["whisper-base"].hub_id
    assert meta["base_model"] == BASE and meta["base_model_hub_id"] == "openai/whisper-base"
    assert meta["embedded_sha256"] == embedded_origin(BASE)["embedded_sha256"]
    assert meta["embedded_sha256"] in {layout.sha256 for layout in EMBEDDED["whisper-base"].layouts}
    gen = json.loads((adapter_dir / "generation_config.json").read_text())
    assert gen["language"] == "en" and gen["task"] == "transcribe" and gen.get("forced_decoder_ids") is None
    tok = json.loads((adapter_dir / "tokenizer_config.json").read_text())
    assert "extra_special_tokens" not in tok and "<|en|>" in tok["additional_special_tokens"]
    assert (adapter_dir / "preprocessor_config.json").is_file()
    front = yaml.safe_load((adapter_dir / "README.md").read_text().split("---")[1])
    assert front["base_model"] == "openai/whisper-base" and front["library_name"] == "peft"
    assert front["pipeline_tag"] == "automatic-speech-recognition" and front["language"] == ["en"]


@pytest.mark.slow  # about a minute: two whisper-base loads in a fresh process
def test_cards_load_with_plain_libraries(adapter_dir, merged_dir, clips, tmp_path):
    expected = _whispertune_texts(adapter_dir, clips)
    assert all(expected)
    merged_front = yaml.safe_load((merged_dir / "README.md").read_text().split("---")[1])
    assert merged_front["base_model"] == "openai/whisper-base" and merged_front["library_name"] == "transformers"
    result = _run_cards(sys.executable, adapter_dir, merged_dir, clips, tmp_path)
    assert not result["whispertune_imported"]
    assert result["texts"]["adapter"] == expected
    assert result["texts"]["merged"] == expected[:1]  # the pipeline with num_beams=1, as the card says


@pytest.mark.slow
def test_cards_load_with_transformers_4(adapter_dir, merged_dir, clips, tmp_path):
    python = os.environ.get("WHISPERTUNE_T4_PYTHON")
    if not python or not Path(python).is_file():
        pytest.skip("set WHISPERTUNE_T4_PYTHON to a Python with transformers<5, peft, soundfile (docs/deploy.md)")
    result = _run_cards(python, adapter_dir, merged_dir, clips, tmp_path)
    assert result["transformers"].startswith("4.")
    assert result["texts"]["adapter"] == _whispertune_texts(adapter_dir, clips)
    assert result["texts"]["merged"] == result["texts"]["adapter"][:1]
