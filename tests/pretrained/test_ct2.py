"""CTranslate2 model.bin reader and converter, on small synthetic files written by the test itself."""

from __future__ import annotations

import copy
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_whisper
from whispertune.errors import UserError
from whispertune.pretrained.ct2_import import import_ct2
from whispertune.pretrained.ct2_reader import read_ct2_model

TYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                    spec: str = "WhisperSpec", version: int = 6) -> Path:
    """Test-side writer of the version-6 layout (independent of the reader under test)."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<II", 3, len(variables))]
    for name, value in sorted(variables.items()):
        value = np.asarray(value)
        out += [_string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape)]
        out += [struct.pack("<BI", TYPE_IDS[value.dtype], value.nbytes), value.astype(value.dtype.newbyteorder("<")).tobytes()]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))
    return path


@pytest.fixture
def sample_vars() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "decoder/activation": np.array(3, dtype=np.int8),
        "decoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/embeddings/weight": rng.standard_normal((7, 4)).astype(np.float16),
        "encoder/conv1/weight": rng.standard_normal((4, 3, 3)).astype(np.float32),
        "encoder/conv1/bias": rng.standard_normal(4).astype(np.float32),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip(tmp_path, sample_vars, dtype):
    sample_vars = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in sample_vars.items()}
    path = write_model_bin(tmp_path / "model.bin", sample_vars, {"decoder/projection/weight": "decoder/embeddings/weight"})
    spec, variables, aliases = read_ct2_model(tmp_path)  # a directory is accepted too
    assert spec == "WhisperSpec"
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert sorted(variables) == sorted(sample_vars)
    for name, value in sample_vars.items():
        assert variables[name].dtype == value.dtype and variables[name].shape == value.shape
        np.testing.assert_array_equal(variables[name], value)
    assert int(variables["decoder/num_heads"]) == 6
    assert read_ct2_model(path)[0] == "WhisperSpec"


def test_int8_model_refused_with_fix(tmp_path, sample_vars):
    sample_vars["decoder/embeddings/weight"] = np.ones((7, 4), dtype=np.int8)
    sample_vars["decoder/embeddings/weight_scale"] = np.ones(7, dtype=np.float32)
    write_model_bin(tmp_path / "model.bin", sample_vars)
    with pytest.raises(UserError, match=r"quantized \(int8.*ct2-transformers-converter.*--quantization float16"):
        read_ct2_model(tmp_path / "model.bin")


@pytest.mark.parametrize("cut", [3, 10, 40, 200, -1])
def test_truncated_file_refused(tmp_path, sample_vars, cut):
    data = write_model_bin(tmp_path / "full.bin", sample_vars).read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(data[:cut])
    with pytest.raises(UserError, match=rf"{bad}: .*(truncated|too short)"):
        read_ct2_model(bad)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "binary version"),
        (struct.pack("<I", 5) + bytes(40), "binary version 5"),
        (struct.pack("<IH", 6, 3) + b"abc" + bytes(20), "not NUL-terminated"),
    ],
)
def test_garbage_refused(tmp_path, content, message):
    (tmp_path / "model.bin").write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_ct2_model(tmp_path / "model.bin")


def test_trailing_bytes_and_bad_alias_refused(tmp_path, sample_vars):
    path = write_model_bin(tmp_path / "model.bin", sample_vars)
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(UserError, match="4 unexpected bytes"):
        read_ct2_model(path)
    write_model_bin(path, sample_vars, {"decoder/projection/weight": "decoder/nothing"})
    with pytest.raises(UserError, match="missing variable 'decoder/nothing'"):
        read_ct2_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_ct2_model(tmp_path)


# --- a tiny random Whisper, written in CTranslate2's layout, converted back ---------------------------------


def to_ct2_variables(model) -> dict[str, np.ndarray]:
    """Inverse of the converter's mapping: fuse q/k/v (zero k bias) and rename, as CTranslate2 stores Whisper."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    cfg = model.config
    out = {
        "encoder/num_heads": np.array(cfg.encoder_attention_heads, np.int16),
        "decoder/num_heads": np.array(cfg.decoder_attention_heads, np.int16),
        "decoder/activation": np.array(3, np.int8),
        "decoder/pre_norm": np.array(1, np.int8),
        "encoder/pre_norm": np.array(1, np.int8),
        "encoder/activation": np.array(3, np.int8),
        "decoder/scale_embeddings": np.array(0, np.int8),
        "decoder/embeddings/weight": sd["model.decoder.embed_tokens.weight"],
    }

    def norm(src, dst):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def linear(src, dst):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src, parts, dst):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{p}.weight"] for p in parts])
        zeros = np.zeros(cfg.d_model, np.float16)
        out[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{p}.bias", zeros) for p in parts])

    for stack in ("encoder", "decoder"):
        out[f"{stack}/position_encodings/encodings"] = sd[f"model.{stack}.embed_positions.weight"]
        norm(f"model.{stack}.layer_norm", f"{stack}/layer_norm")
        for i in range(cfg.encoder_layers if stack == "encoder" else cfg.decoder_layers):
            s, d = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            fused(f"{s}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{d}/self_attention/linear_0")
            linear(f"{s}.self_attn.out_proj", f"{d}/self_attention/linear_1")
            norm(f"{s}.self_attn_layer_norm", f"{d}/self_attention/layer_norm")
            if stack == "decoder":
                linear(f"{s}.encoder_attn.q_proj", f"{d}/attention/linear_0")
                fused(f"{s}.encoder_attn", ["k_proj", "v_proj"], f"{d}/attention/linear_1")
                linear(f"{s}.encoder_attn.out_proj", f"{d}/attention/linear_2")
                norm(f"{s}.encoder_attn_layer_norm", f"{d}/attention/layer_norm")
            linear(f"{s}.fc1", f"{d}/ffn/linear_0")
            linear(f"{s}.fc2", f"{d}/ffn/linear_1")
            norm(f"{s}.final_layer_norm", f"{d}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    return out


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory, multilingual_tokenizer_dir):
    """(reference transformers model, CTranslate2 dir) for a tiny random multilingual Whisper."""
    from transformers import WhisperForConditionalGeneration

    ref_dir = make_tiny_whisper(tmp_path_factory.mktemp("ref"), multilingual_tokenizer_dir)
    model = WhisperForConditionalGeneration.from_pretrained(ref_dir).eval()
    ct2_dir = tmp_path_factory.mktemp("ct2")
    write_model_bin(ct2_dir / "model.bin", to_ct2_variables(model),
                    {"decoder/projection/weight": "decoder/embeddings/weight"})
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(multilingual_tokenizer_dir / name, ct2_dir / name)
    return model, ct2_dir


def test_import_tiny_model_matches_reference(tiny_ct2, tmp_path):
    import json

    from transformers import WhisperForConditionalGeneration

    ref, ct2_dir = tiny_ct2
    out = import_ct2(ct2_dir, tmp_path / "hf")
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".hf.tmp-*"))  # the temp dir was renamed into place
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["decoder_attention_heads"], cfg["vocab_size"]) == (64, 2, 2, 51865)
    assert cfg["suppress_tokens"] is None and cfg["begin_suppress_tokens"] is None
    gen = json.loads((out / "generation_config.json").read_text())
    assert len(gen["lang_to_id"]) == 99 and gen["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert gen["no_timestamps_token_id"] == 50363 and gen["suppress_tokens"] and gen["alignment_heads"]
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    ref_sd = ref.state_dict()
    for name, value in model.state_dict().items():
        # the file stores float16: the converted weights equal the reference rounded to float16
        torch.testing.assert_close(value, ref_sd[name].half().float(), rtol=0, atol=0, msg=name)
    feats = torch.randn(1, 80, 3000)
    ids = torch.tensor([[50258, 50259, 50359, 50363]])  # sot, <|en|>, transcribe, notimestamps
    rounded = copy.deepcopy(ref).half().float()
    with torch.no_grad():
        torch.testing.assert_close(model(feats, decoder_input_ids=ids).logits,
                                   rounded(feats, decoder_input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_ctranslate2_reads_the_test_writer(tiny_ct2):
    """The test-side writer produces files CTranslate2 itself accepts, so the layout tested above is the real one."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    _, ct2_dir = tiny_ct2
    model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    assert model.is_multilingual and model.n_mels == 80


def test_float16_output_and_refusals(tiny_ct2, tmp_path):
    from safetensors.numpy import load_file

    _, ct2_dir = tiny_ct2
    out = import_ct2(ct2_dir, tmp_path / "fp16", dtype="float16")
    assert {v.dtype for v in load_file(str(out / "model.safetensors")).values()} == {np.dtype("float16")}
    with pytest.raises(UserError, match="already exists"):
        import_ct2(ct2_dir, out)
    with pytest.raises(UserError, match="--dtype"):
        import_ct2(ct2_dir, tmp_path / "x", dtype="int8")
    with pytest.raises(UserError, match="no model.bin"):
        import_ct2(tmp_path, tmp_path / "y")


def test_nonzero_k_bias_refused(tiny_ct2, tmp_path):
    _, ct2_dir = tiny_ct2
    _, variables, aliases = read_ct2_model(ct2_dir)
    variables = {k: np.array(v) for k, v in variables.items()}
    variables["encoder/layer_1/self_attention/linear_0/bias"][64 + 3] = 0.5  # inside the k slice
    bad = tmp_path / "bad"
    shutil.copytree(ct2_dir, bad, ignore=shutil.ignore_patterns("model.bin"))
    write_model_bin(bad / "model.bin", variables, aliases)
    with pytest.raises(UserError, match="non-zero in the k_proj slice"):
        import_ct2(bad, tmp_path / "out")


def test_cli_import_ct2(tiny_ct2, tmp_path, capsys):
    from whispertune.cli import main

    _, ct2_dir = tiny_ct2
    assert main(["import-ct2", str(ct2_dir), "--out", str(tmp_path / "cli"), "--dtype", "float16"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "cli" / "model.safetensors").is_file()
    assert main(["import-ct2", str(ct2_dir), "--out", str(tmp_path / "cli")]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert main(["import-ct2", str(ct2_dir), "--out", str(tmp_path / "cli"), "--force"]) == 0
    assert main(["import-ct2", "embedded:nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown embedded model" in capsys.readouterr().err
