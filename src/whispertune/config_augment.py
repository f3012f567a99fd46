"""The `augment:` config section: on-the-fly augmentation of the training split (data/augment.py) and
SpecAugment on the features (transformers' Whisper config fields, applied by the model in training mode).

Its checks live here too; `config.validate` calls `check_augment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass
class AugmentConfig:
    enabled: bool = False  # nothing below is applied unless this is true
    noise_prob: float = 0.5  # additive noise, at a signal-to-noise ratio drawn from snr_db
    snr_db: list[float] = field(default_factory=lambda: [10.0, 40.0])
    noise_dir: str | None = None  # a folder of noise recordings; None: generated coloured noise
    speed_prob: float = 0.5  # tempo change (pitch kept), rate drawn from speed (>1 faster, shorter)
    speed: list[float] = field(default_factory=lambda: [0.9, 1.1])
    gain_prob: float = 0.5
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])
    reverb_prob: float = 0.3  # a room impulse response: from ir_dir, else a simulated shoebox room
    ir_dir: str | None = None
    spec_augment: bool = True  # SpecAugment masks on the log-Mel features inside the model (training only)
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0

    @property
    def audio_on(self) -> bool:
        """Whether any waveform transform can apply: the training split then keeps its audio."""
        return self.enabled and any(p > 0 for p in (self.noise_prob, self.speed_prob, self.gain_prob, self.reverb_prob))

    @property
    def spec_on(self) -> bool:
        return self.enabled and self.spec_augment

    def settings(self) -> dict[str, Any]:
        """What the run applies, for the data report: the transforms that can fire, each with its range."""
        out: dict[str, Any] = {}
        if self.audio_on:
            if self.noise_prob > 0:
                out["noise"] = {"prob": self.noise_prob, "snr_db": self.snr_db,
                                "source": self.noise_dir or "generated coloured noise"}
            if self.speed_prob > 0:
                out["speed"] = {"prob": self.speed_prob, "rate": self.speed}
            if self.gain_prob > 0:
                out["gain"] = {"prob": self.gain_prob, "gain_db": self.gain_db}
            if self.reverb_prob > 0:
                out["reverb"] = {"prob": self.reverb_prob, "source": self.ir_dir or "simulated room"}
        if self.spec_on:
            out["spec_augment"] = {k: getattr(self, k) for k in SPEC_AUGMENT_FIELDS}
        return out


# The AugmentConfig fields that are also WhisperConfig fields of the same name and meaning.
SPEC_AUGMENT_FIELDS = ("mask_time_prob", "mask_time_length", "mask_time_min_masks", "mask_feature_prob",
                       "mask_feature_length", "mask_feature_min_masks")

# (key, lowest, highest) of each [min, max] pair
_PAIRS = (("snr_db", -20.0, 120.0), ("speed", 0.5, 2.0), ("gain_db", -40.0, 40.0))


def _check_pair(key: str, value: list[float], lo: float, hi: float) -> None:
    if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1] \
            or value[0] < lo or value[1] > hi:
        raise ConfigError(f"augment.{key}: got {value}, expected [min, max] with {lo} <= min <= max <= {hi}")


def _check_folder(key: str, folder: str) -> None:
    # the transforms find their files with this same function (lazy: it imports librosa)
    from audiomentations.core.utils import SUPPORTED_EXTENSIONS, find_audio_files_in_paths

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"augment.{key}: folder {path} not found")
    if not find_audio_files_in_paths(path):
        raise ConfigError(f"augment.{key}: folder {path} holds no audio files ({', '.join(SUPPORTED_EXTENSIONS)})")


def check_augment(cfg: Any) -> None:
    """Ranges of the `augment` section and its combinations with other sections (`cfg`: a Config)."""
    aug = cfg.augment
    for key in ("noise_prob", "speed_prob", "gain_prob", "reverb_prob", "mask_time_prob", "mask_feature_prob"):
        value = getattr(aug, key)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"augment.{key}: got {value}, expected a probability in [0, 1]")
    for key in ("mask_time_length", "mask_feature_length"):
        if getattr(aug, key) < 1:
            raise ConfigError(f"augment.{key}: got {getattr(aug, key)}, expected a positive integer")
    for key in ("mask_time_min_masks", "mask_feature_min_masks"):
        if getattr(aug, key) < 0:
            raise ConfigError(f"augment.{key}: got {getattr(aug, key)}, expected an integer >= 0")
    for key, lo, hi in _PAIRS:
        _check_pair(key, getattr(aug, key), lo, hi)
    if not aug.enabled:
        return
    if aug.noise_dir is not None and aug.noise_prob > 0:
        _check_folder("noise_dir", aug.noise_dir)
    if aug.ir_dir is not None and aug.reverb_prob > 0:
        _check_folder("ir_dir", aug.ir_dir)
    if cfg.train.cache_encoder_outputs and (aug.audio_on or aug.spec_on):
        raise ConfigError("augment.enabled: true cannot be combined with train.cache_encoder_outputs (the cache "
                          "encodes each clip once, so the encoder would never see augmented input); drop one of them")
    if cfg.data.streaming and aug.audio_on:
        raise ConfigError("augment.enabled: true with audio transforms cannot be combined with data.streaming "
                          "(streamed rows are not augmented); drop data.streaming, or set augment.noise_prob, "
                          "speed_prob, gain_prob and reverb_prob to 0 to keep SpecAugment only")
