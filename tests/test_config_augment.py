"""The `augment:` config section: flags and YAML, its ranges, folders and combinations, each a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import yaml

from whispertune.cli import main
from whispertune.config import load_config


def error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whispertune: error: "), lines
    return lines[0]


def test_flags_and_yaml_fill_the_section(tmp_path, capsys):
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "street.wav", np.zeros(1600, np.float32), 16000)
    capsys.readouterr()
    assert main(["train", "--print-config", "--augment.enabled", "true", "--augment.snr_db", "5,15",
                 "--augment.noise_dir", str(noise), "--augment.mask_time_prob", "0.1"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["augment"]
    assert printed["enabled"] is True and printed["snr_db"] == [5.0, 15.0] and printed["noise_dir"] == str(noise)
    assert printed["mask_time_prob"] == 0.1
    path = tmp_path / "c.yaml"
    path.write_text("augment:\n  enabled: true\n  speed: [0.95, 1.05]\n  reverb_prob: 0\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.augment.speed == [0.95, 1.05] and cfg.augment.audio_on and cfg.augment.spec_on
    assert "reverb" not in cfg.augment.settings() and load_config(None).augment.enabled is False


BAD = [
    (["--augment.noise_prob", "1.5"], "augment.noise_prob: got 1.5, expected a probability in [0, 1]"),
    (["--augment.mask_time_prob", "-0.1"], "augment.mask_time_prob: got -0.1"),
    (["--augment.mask_time_length", "0"], "augment.mask_time_length: got 0, expected a positive integer"),
    (["--augment.snr_db", "20,10"], "augment.snr_db: got [20.0, 10.0], expected [min, max]"),
    (["--augment.snr_db", "10"], "augment.snr_db: got 10, expected a list of a number"),
    (["--augment.snr_db", "[10]"], "augment.snr_db: got [10.0], expected [min, max]"),
    (["--augment.speed", "0.1,1.1"], "augment.speed: got [0.1, 1.1], expected [min, max] with 0.5 <= min"),
    (["--augment.gain_db", "-6,.inf"], "augment.gain_db: got [-6.0, inf]"),
    (["--augment.enabled", "true", "--train.freeze_encoder", "true", "--train.cache_encoder_outputs", "true"],
     "augment.enabled: true cannot be combined with train.cache_encoder_outputs"),
    (["--augment.enabled", "true", "--data.source", "hub", "--data.streaming", "true", "--train.max_steps", "10"],
     "augment.enabled: true with audio transforms cannot be combined with data.streaming"),
]


@pytest.mark.parametrize("flags, expected", BAD)
def test_bad_values_name_the_key(flags, expected, capsys):
    assert expected in error_line(["train", "--print-config", *flags], capsys)


def test_spec_augment_alone_may_stream(capsys):
    flags = ["--augment.enabled", "true", "--data.source", "hub", "--data.streaming", "true", "--train.max_steps", "10"]
    off = [f"--augment.{k}_prob" for k in ("noise", "speed", "gain", "reverb")]
    capsys.readouterr()
    assert main(["train", "--print-config", *flags, *[x for k in off for x in (k, "0")]]) == 0


def test_folders_are_checked_only_when_used(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    line = error_line(["train", "--print-config", "--augment.enabled", "true", "--augment.noise_dir", str(missing)],
                      capsys)
    assert f"augment.noise_dir: folder {missing} not found" in line
    empty = tmp_path / "irs"
    empty.mkdir()
    (empty / "notes.txt").write_text("not audio", encoding="utf-8")
    line = error_line(["train", "--print-config", "--augment.enabled", "true", "--augment.ir_dir", str(empty)], capsys)
    assert f"augment.ir_dir: folder {empty} holds no audio files (.aac" in line
    # off, or the transform that reads the folder off: not read
    assert main(["train", "--print-config", "--augment.ir_dir", str(missing)]) == 0
    assert main(["train", "--print-config", "--augment.enabled", "true", "--augment.reverb_prob", "0",
                 "--augment.ir_dir", str(missing)]) == 0
