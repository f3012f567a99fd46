"""Issue 14 C: OS and library failures a user can cause are one line, exit 2, naming the file and the fix.

Real files throughout: truncated safetensors, a BERT config, broken processor JSON, an output directory under
a file, in a symlink loop or with a name too long. Read-only and full disks cannot be made for real when the
tests run as root (chmod does not stop root; mounting a small tmpfs needs privileges CI lacks), so those are
injected as the OSError the OS raises, at the write boundary (`open` inside `training.run_dir`), and the
whole command runs for real around it.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from peft import LoraConfig, get_peft_model
from transformers import WhisperForConditionalGeneration

from whispertune.cli import main
from whispertune.errors import UserError, user_error_for

SR = 16000


def one_error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("whispertune:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("whispertune: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def clip(tmp_path) -> Path:
    path = tmp_path / "a.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32), SR)
    return path


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _remove_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()


BROKEN_MODELS = {
    "truncated safetensors": (lambda d: _truncate(d / "model.safetensors"), ["a safetensors file is corrupt or "
                              "truncated", "file not fully covered", "re-download"]),
    "safetensors header cut": (lambda d: _truncate(d / "model.safetensors", 5), ["corrupt or truncated",
                               "header too small"]),
    "config of another architecture": (
        lambda d: (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]})),
        ["config.json: model_type 'bert' is not a Whisper model", "embedded:whisper-base"]),
    "no config.json": (lambda d: (d / "config.json").unlink(), ["no config.json", "import-ct2"]),
    "config.json not JSON": (lambda d: _truncate(d / "config.json", 20), ["config.json: not valid JSON", "re-download"]),
    "no feature extractor": (lambda d: (d / "processor_config.json").unlink(), ["processor_config.json (the feature "
                             "extractor)", "copy the processor files"]),
    "no tokenizer": (_remove_tokenizer, ["no tokenizer.json", "copy the processor files"]),
    "tokenizer.json truncated": (lambda d: _truncate(d / "tokenizer.json"), ["tokenizer.json: not valid JSON"]),
}


@pytest.mark.parametrize("kind", list(BROKEN_MODELS))
def test_broken_model_directories(kind, tiny_whisper_dir, tmp_path, clip, capsys):
    broken = tmp_path / "model"
    shutil.copytree(tiny_whisper_dir, broken)
    damage, expected = BROKEN_MODELS[kind]
    damage(broken)
    line = one_error_line(["transcribe", str(clip), "--model", str(broken), "--max-new-tokens", "2"], capsys)
    assert str(broken) in line
    for part in expected:
        assert part in line, line


def test_truncated_adapter_names_the_adapter(tiny_whisper_dir, tmp_path, clip, capsys):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    adapter = tmp_path / "adapter"
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    _truncate(adapter / "adapter_model.safetensors")
    line = one_error_line(["transcribe", str(clip), "--model", str(tiny_whisper_dir), "--adapter", str(adapter)], capsys)
    assert f"adapter {adapter}: a safetensors file is corrupt or truncated" in line


def test_output_paths_the_os_refuses(tmp_path, clip, capsys):
    """Real ENOTDIR, ELOOP, ENAMETOOLONG and EEXIST, caught before any model is loaded (the model does not exist)."""
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {
        a_file / "out": "Not a directory; a part of the path is a file",
        tmp_path / "loop" / "out": "Too many levels of symbolic links; a symlink loop?",
        tmp_path / ("x" * 300): "File name too long; use a shorter path",
        a_file: "File exists; a file of that name is in the way",
    }
    for out, expected in cases.items():
        line = one_error_line(["transcribe", str(clip), "--model", str(tmp_path / "no-model"), "--output-dir", str(out)],
                              capsys)
        assert f"{out}: {expected}" in line, line


class _FullDisk:
    """What `write()` on a full disk raises."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text):
        Path(self.path).write_bytes(b"")  # the file exists, empty, as on a real full disk
        raise OSError(errno.ENOSPC, "No space left on device")


def _inject(code: int):
    def fake_open(path, mode="r", **kwargs):
        if code == errno.ENOSPC:
            return _FullDisk(path)
        raise OSError(code, {errno.EROFS: "Read-only file system", errno.EACCES: "Permission denied"}[code], str(path))

    return fake_open


@pytest.mark.parametrize("code, expected", [
    (errno.EROFS, "Read-only file system; write to a directory on a writable disk"),
    (errno.EACCES, "Permission denied; fix its permissions or use another path"),
    (errno.ENOSPC, "No space left on device; free some space or write to another disk"),
])
def test_unwritable_output_is_one_line_and_leaves_nothing_half_written(code, expected, tiny_whisper_dir, tmp_path,
                                                                       clip, capsys, monkeypatch):
    out = tmp_path / "subs"
    monkeypatch.setattr("whispertune.atomic_files.open", _inject(code), raising=False)
    line = one_error_line(["transcribe", str(clip), "--model", str(tiny_whisper_dir), "--language", "mr",
                           "--max-new-tokens", "2", "--output-dir", str(out)], capsys)
    assert line == f"whispertune: error: {out / 'a.txt'}: {expected}"
    assert list(out.iterdir()) == []  # no temporary file, no half-written output


def test_library_errors_that_carry_an_errno(tmp_path):
    # safetensors (Rust) reports a full disk inside its own error type, as this text
    class SafetensorError(Exception):
        pass

    rust = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                           '"No space left on device" })')
    assert str(user_error_for(rust, "adapter out/adapter")).startswith(
        "adapter out/adapter: No space left on device; free some space or write to another disk (Error while "
        "serializing: IoError(")
    # an error raised while handling an OSError: the OSError decides
    try:
        try:
            (tmp_path / "missing" / "x").write_text("x")
        except OSError as exc:
            raise RuntimeError("save failed") from exc
    except RuntimeError as exc:
        mapped = user_error_for(exc)
    assert isinstance(mapped, UserError) and str(mapped).endswith("No such file or directory; check the path")
    assert user_error_for(KeyError("a bug")) is None  # not the user's doing: the CLI says internal error


def test_debug_keeps_the_traceback(tmp_path, clip):
    with pytest.raises(FileExistsError):
        main(["--debug", "transcribe", str(clip), "--output-dir", str(clip)])


def test_a_short_write_inside_torch_save_is_a_disk_full_line(tmp_path):
    """torch.save under a file size limit (what a full disk looks like to its zip writer): no errno, one line."""
    script = (
        "import resource, signal, torch\n"
        "from whispertune.errors import user_error_for\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "try:\n"
        f"    torch.save({{'w': torch.zeros(200_000)}}, {str(tmp_path / 'optimizer.pt')!r})\n"
        "except RuntimeError as exc:\n"
        "    print(user_error_for(exc))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip()
    assert "disk is probably full" in line and "--resume" in line and "\n" not in line
