"""GGML export of the embedded tiny.en, loaded and run by whisper.cpp itself (pywhispercpp) on espeak-ng speech."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import struct

import pytest
import yaml

from whispertune.cli import main
from whispertune.interop.ggml_export import export_ggml
from whispertune.interop.ggml_format import MAGIC, openai_name
from whispertune.interop.parity import read_clips

pytest.importorskip("pywhispercpp")
pytestmark = [pytest.mark.embedded, pytest.mark.synth]
BASE = "embedded:tiny.en"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from whispertune.data.synth import synthesize_corpus

    folder = tmp_path_factory.mktemp("clips")
    synthesize_corpus(folder, "en", ["Please open the window.", "I like reading books in the evening."],
                      splits=("test",), variants=1, engines=("espeak-ng",), progress=False)
    # margin wide on purpose: q5_0 is measured here (docs/deploy.md), the f16/q8_0 bounds are asserted below
    return export_ggml(tmp_path_factory.mktemp("g") / "ggml", model=BASE, formats=("f16", "q8_0", "q5_0"),
                       clips=read_clips(folder), margin=100)


def test_openai_names():
    assert openai_name("model.encoder.layers.3.fc1.weight") == "encoder.blocks.3.mlp.0.weight"
    assert openai_name("model.decoder.layers.0.encoder_attn.k_proj.weight") == "decoder.blocks.0.cross_attn.key.weight"
    assert openai_name("model.encoder.layers.0.self_attn.k_proj.weight") == "encoder.blocks.0.attn.key.weight"
    assert openai_name("model.decoder.embed_positions.weight") == "decoder.positional_embedding"
    assert openai_name("model.decoder.embed_tokens.weight") == "decoder.token_embedding.weight"
    assert openai_name("model.encoder.layer_norm.bias") == "encoder.ln_post.bias"
    assert openai_name("proj_out.weight") is None  # tied to the token embedding


@pytest.mark.slow  # the module's export (about 35 s) is built for this test first
def test_whisper_cpp_transcribes_the_export(export):
    for fmt, report in export.parity.items():
        print(fmt, report.summary())
    f16, q8 = export.parity["f16"], export.parity["q8_0"]
    assert f16.client == "whisper.cpp" and f16.n_clips == 2 and f16.clips == "given"
    assert f16.identical == 2 and f16.wer_client == f16.wer_transformers < 50  # real recognition, same text
    assert abs(q8.wer_client - q8.wer_transformers) <= 15
    sizes = {fmt: path.stat().st_size for fmt, path in export.files.items()}
    assert sizes["q5_0"] < sizes["q8_0"] < sizes["f16"]
    with open(export.files["q8_0"], "rb") as fh:
        magic, n_vocab, *_, ftype = struct.unpack("<12i", fh.read(48))
    assert magic == MAGIC and n_vocab == 51864 and ftype == 2007  # tiny.en's vocabulary; q8_0, quantization v2


def test_card_and_its_snippet(export, tmp_path, monkeypatch):
    out = export.out_dir
    info = json.loads((out / "whispertune.json").read_text())
    assert info["kind"] == "ggml" and info["base_model_hub_id"] == "openai/whisper-tiny.en"
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "openai/whisper-tiny.en" and front["library_name"] == "whisper.cpp"
    assert "`q5_0` parity through whisper.cpp" in card and "identical transcripts 2/2" in card
    row = json.loads((out / "parity.json").read_text())["f16"]["rows"][0]
    shutil.copyfile(row["path"], tmp_path / "clip.wav")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(re.findall(r"```python\n(.*?)```", card, flags=re.S)[0], {})
    assert printed.getvalue().strip() == row["whisper.cpp"]


def test_cli_ggml_format_errors(tmp_path, capsys):
    assert main(["export", "--format", "ggml", "--model", BASE, "--ggml-formats", "q4_k", "--out", str(tmp_path / "x")]) == 2
    assert "ggml format: got q4_k" in capsys.readouterr().err
