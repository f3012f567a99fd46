"""On-the-fly augmentation of the training split (`augment:` config section), with audiomentations.

The training split is prepared keeping its decoded 16 kHz audio (`prepare_split(keep_audio=True)`);
`AugmentedSpeech` hands out item i as: audio -> the transforms, seeded by (train.seed, epoch, i) -> the
processor's feature extractor -> `input_features` (+ `labels`). The seed depends on nothing else, so the
result is the same whatever the DataLoader's worker count or order; the epoch comes from `set_epoch`, which
accelerate's DataLoader and the Trainer callback in training/callbacks.py call before each epoch.

Transforms, in this order, each with its own probability:
- speed: `TimeStretch` (tempo changes, pitch kept; the clip gets shorter or longer). A clip that would come
  out longer than `data.max_duration_s` keeps its speed (Whisper's window would cut its end off while the
  whole transcript is kept);
- reverb: `ApplyImpulseResponse` with the impulse responses in `augment.ir_dir`, else `RoomSimulator` (a
  simulated shoebox room; image sources only, without pyroomacoustics' ray tracing, whose own random
  generator would make the result unrepeatable); the reverb tail past the clip's end is cut (same length);
- noise: `AddBackgroundNoise` from the recordings in `augment.noise_dir`, else `AddColorNoise` (generated
  noise of random colour, white to brown), at an SNR drawn from `augment.snr_db`;
- gain: `Gain`, drawn from `augment.gain_db`.
SpecAugment is not done here: `enable_spec_augment` sets transformers' Whisper config fields, and the model
masks its input features itself, in training mode only.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..config_augment import SPEC_AUGMENT_FIELDS, AugmentConfig
from ..errors import UserError
from .audio import SAMPLE_RATE


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """audiomentations draws from Python's `random` and numpy's global generator: seed both for the block,
    and give the caller its own states back afterwards (the Trainer saves and restores them on resume)."""
    saved = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def item_seed(seed: int, epoch: int, index: int) -> int:
    """One 32-bit seed per (run seed, epoch, item), well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def check_readable(key: str, folder: str) -> str:
    """`folder` expanded, once each of its audio files has been opened (by librosa, which the transforms load
    them with): a damaged file is a one-line error now rather than a crash inside a DataLoader worker later."""
    import librosa
    from audiomentations.core.utils import find_audio_files_in_paths

    path = str(Path(folder).expanduser())
    for file in find_audio_files_in_paths(path):
        try:
            seconds = librosa.get_duration(path=str(file))
        except Exception as exc:  # soundfile's and audioread's errors have no common base
            detail = " ".join(str(exc).split())  # one line; audioread's NoBackendError has no message
            raise UserError(f"augment.{key}: cannot read {file} ({type(exc).__name__}{': ' + detail if detail else ''}); "
                            "remove or replace it") from None
        if not seconds > 0:
            raise UserError(f"augment.{key}: {file} holds no audio; remove or replace it")
    return path


class Augmenter:
    """The waveform transforms of an `AugmentConfig`, applied under a given seed."""

    def __init__(self, aug: AugmentConfig, max_duration_s: float):
        import audiomentations as am  # lazy: it imports librosa and numba

        self.max_samples = int(max_duration_s * SAMPLE_RATE)
        self.speed = am.TimeStretch(min_rate=aug.speed[0], max_rate=aug.speed[1], leave_length_unchanged=False,
                                    p=aug.speed_prob) if aug.speed_prob > 0 else None
        rest = []
        if aug.reverb_prob > 0:
            rest.append(am.ApplyImpulseResponse(ir_path=check_readable("ir_dir", aug.ir_dir), p=aug.reverb_prob,
                                                leave_length_unchanged=True) if aug.ir_dir else
                        am.RoomSimulator(use_ray_tracing=False, max_order=6, leave_length_unchanged=True,
                                         p=aug.reverb_prob))
        if aug.noise_prob > 0:
            low, high = aug.snr_db
            rest.append(am.AddBackgroundNoise(sounds_path=check_readable("noise_dir", aug.noise_dir), min_snr_db=low,
                                              max_snr_db=high, p=aug.noise_prob) if aug.noise_dir else
                        am.AddColorNoise(min_snr_db=low, max_snr_db=high, p=aug.noise_prob))
        if aug.gain_prob > 0:
            rest.append(am.Gain(min_gain_db=aug.gain_db[0], max_gain_db=aug.gain_db[1], p=aug.gain_prob))
        self.rest = am.Compose(rest) if rest else None

    def __call__(self, samples: np.ndarray, seed: int) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        with seeded(seed):
            if self.speed is not None:
                stretched = self.speed(samples, sample_rate=SAMPLE_RATE)
                if len(stretched) <= self.max_samples:
                    samples = stretched
            if self.rest is not None:
                samples = self.rest(samples, sample_rate=SAMPLE_RATE)
        return samples.astype(np.float32, copy=False)


class AugmentedSpeech(torch.utils.data.Dataset):
    """A training split prepared with `keep_audio`, handing out augmented `input_features` and `labels`.

    The epoch lives in a shared-memory tensor: DataLoader workers (persistent ones included, as on a GPU)
    hold copies of this object made when they started, and still read the epoch the main process sets."""

    def __init__(self, rows: Dataset, augmenter: Augmenter, feature_extractor: Any, seed: int):
        self.rows = rows.with_format("numpy", columns=["samples", "labels"])
        self.augmenter, self.feature_extractor, self.seed = augmenter, feature_extractor, seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        row = self.rows[index]
        samples = self.augmenter(row["samples"], item_seed(self.seed, self.epoch, index))
        features = self.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        return {"input_features": features.astype(np.float32), "labels": row["labels"]}


def augmented(rows: Dataset, aug: AugmentConfig, feature_extractor: Any, *, seed: int,
              max_duration_s: float) -> AugmentedSpeech:
    """`rows` (prepared with keep_audio) as the augmented training dataset."""
    return AugmentedSpeech(rows, Augmenter(aug, max_duration_s), feature_extractor, seed)


def enable_spec_augment(model_config: Any, aug: AugmentConfig) -> None:
    """Turn on Whisper's own SpecAugment (`WhisperModel._mask_input_features`, training mode only) with the
    section's masks. Only the in-memory model changes: an adapter saves no base config, and `merge` reloads
    the base from its files."""
    model_config.apply_spec_augment = True
    for name in SPEC_AUGMENT_FIELDS:
        setattr(model_config, name, getattr(aug, name))
