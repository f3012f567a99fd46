"""Issue 8 item 5: weights come from safetensors only, pickles are never executed, remote code is never
trusted. The embedded model's pinned SHA-256 check is tested in
tests/pretrained/test_embedded.py::test_tampered_part_refused (a one-byte change in a part is refused)."""

from __future__ import annotations

import ast
import json
import pathlib
import shutil
from pathlib import Path

import pytest
import torch

import whispertune
from whispertune.config import ModelConfig, QuantizationConfig
from whispertune.errors import UserError
from whispertune.inference.generation import load_for_inference
from whispertune.inference.options import LoadOptions
from whispertune.model.loading import load_base

PACKAGE = Path(whispertune.__file__).parent


class _Payload:
    """Unpickling this creates `marker`: a stand-in for arbitrary code in a malicious pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _malicious_bin(path: Path, state: dict[str, torch.Tensor], marker: Path) -> None:
    torch.save({**state, "payload": _Payload(marker)}, path)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_calls(source: str, name: str) -> list[str]:
    """Pickle imports, torch.load without weights_only=True, trust_remote_code other than False,
    use_safetensors other than True, and bare eval/exec in one module's source."""
    problems = []
    tree = ast.parse(source, filename=name)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                problems.append(f"{name}:{node.lineno}: imports a pickle library")
    for call, func in _calls(tree):
        where = f"{name}:{call.lineno}: {func}"
        if func.endswith("torch.load"):
            only = _keyword(call, "weights_only")
            if not (isinstance(only, ast.Constant) and only.value is True):
                problems.append(f"{where} without weights_only=True")
        trust = _keyword(call, "trust_remote_code")
        if trust is not None and not (isinstance(trust, ast.Constant) and trust.value is False):
            problems.append(f"{where} with trust_remote_code={ast.unparse(trust)}")
        safe = _keyword(call, "use_safetensors")
        if safe is not None and not (isinstance(safe, ast.Constant) and safe.value is True):
            problems.append(f"{where} with use_safetensors={ast.unparse(safe)}")
        if func in ("eval", "exec"):
            problems.append(where)
    return problems


def test_scanner_finds_unsafe_calls():
    bad = ("import pickle\nimport torch\nx = torch.load(p)\ny = torch.load(p, weights_only=False)\n"
           "m = M.from_pretrained(n, trust_remote_code=True)\nm = M.from_pretrained(n, use_safetensors=False)\n"
           "eval(s)\nok = torch.load(p, weights_only=True)\n")
    found = unsafe_calls(bad, "bad.py")
    assert [f.split(":")[1] for f in found] == ["1", "3", "4", "5", "6", "7"], found


def test_package_source_never_unpickles_or_trusts_remote_code():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    problems = [p for path in sources for p in unsafe_calls(path.read_text(encoding="utf-8"), path.name)]
    assert problems == []


def _pickle_only_model(tiny_whisper_dir: Path, out: Path, marker: Path) -> Path:
    """The tiny model's config and processor files with its weights as a (malicious) pytorch_model.bin."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_whisper_dir, out)
    state = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    _malicious_bin(out / "pytorch_model.bin", state, marker)
    return out


def test_pickle_only_model_is_refused(tiny_whisper_dir, tmp_path):
    marker = tmp_path / "pwned"
    model_dir = _pickle_only_model(tiny_whisper_dir, tmp_path / "model", marker)
    with pytest.raises(UserError, match=r"cannot load model .*model\.safetensors"):
        load_base(ModelConfig(name_or_path=str(model_dir), language="en"), QuantizationConfig(), for_training=False,
                  device="cpu")
    with pytest.raises(UserError, match=r"cannot load model .*model\.safetensors"):
        load_for_inference(str(model_dir), options=LoadOptions(device="cpu"))
    assert not marker.exists()  # the pickle was never opened
    torch.load(model_dir / "pytorch_model.bin", weights_only=False)  # what an unsafe loader would do
    assert marker.exists()  # (the payload is real)


def test_pickle_adapter_is_not_executed(tiny_whisper_dir, tmp_path):
    """An adapter holding only a (malicious) adapter_model.bin: peft reads .bin files with
    torch.load(weights_only=True), which refuses the payload; nothing is executed."""
    marker = tmp_path / "pwned"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
        "base_model_name_or_path": str(tiny_whisper_dir)}))
    _malicious_bin(adapter / "adapter_model.bin", {}, marker)
    with pytest.raises(Exception) as info:
        load_for_inference(adapter=str(adapter), options=LoadOptions(device="cpu"))
    print(f"{type(info.value).__name__}: {info.value}")
    assert "weights_only" in str(info.value) or "safetensors" in str(info.value), info.value
    assert not marker.exists()
