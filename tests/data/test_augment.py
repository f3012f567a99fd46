"""On-the-fly augmentation (data/augment.py): each transform measured on real signals, seeding, the training
split kept as audio, evaluation data untouched, and Whisper's SpecAugment in training mode only."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from whispertune.config import Config
from whispertune.config_augment import AugmentConfig
from whispertune.data.augment import AugmentedSpeech, Augmenter, enable_spec_augment, item_seed
from whispertune.errors import UserError

RATE = 16000


def only(**changes) -> AugmentConfig:
    """Augmentation on with every transform off except those in `changes`."""
    return AugmentConfig(**{"enabled": True, "noise_prob": 0.0, "speed_prob": 0.0, "gain_prob": 0.0,
                            "reverb_prob": 0.0, **changes})


def tone(seconds: float = 2.0, freq: float = 440.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2)))


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_generated_noise_at_the_requested_snr(snr):
    clean = tone()
    for seed in range(3):
        noisy = Augmenter(only(noise_prob=1.0, snr_db=[snr, snr]), 30.0)(clean, seed)
        assert len(noisy) == len(clean) and abs(snr_db(clean, noisy) - snr) < 1.0


def test_noise_from_a_folder_at_the_requested_snr(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "hum.wav", 0.05 * rng.standard_normal(3 * RATE), RATE)
    sf.write(tmp_path / "fan.flac", 0.2 * rng.standard_normal(RATE // 2), RATE)  # shorter than the clip: repeated
    clean = tone()
    outs = [Augmenter(only(noise_prob=1.0, snr_db=[12.0, 12.0], noise_dir=str(tmp_path)), 30.0)(clean, s)
            for s in range(4)]
    assert all(abs(snr_db(clean, out) - 12.0) < 1.0 for out in outs)


def test_a_damaged_noise_file_is_named_before_training(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(RATE, np.float32) + 0.01, RATE)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav file at all")
    with pytest.raises(UserError, match=r"augment.noise_dir: cannot read .*broken.wav .*remove or replace it"):
        Augmenter(only(noise_prob=1.0, noise_dir=str(tmp_path)), 30.0)


@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_speed_changes_the_duration_by_the_rate(rate):
    clean = tone(3.0)
    out = Augmenter(only(speed_prob=1.0, speed=[rate, rate]), 30.0)(clean, 0)
    assert abs(len(out) / len(clean) - 1 / rate) < 0.01


def test_a_clip_too_long_once_slowed_keeps_its_speed():
    clean = tone(5.0)
    out = Augmenter(only(speed_prob=1.0, speed=[0.9, 0.9]), 5.2)(clean, 0)  # 5.56 s > 5.2 s
    np.testing.assert_array_equal(out, clean)


@pytest.mark.parametrize("gain", [-6.0, 4.5])
def test_gain_in_db(gain):
    clean = tone()
    out = Augmenter(only(gain_prob=1.0, gain_db=[gain, gain]), 30.0)(clean, 0)
    measured = 20 * np.log10(np.sqrt(np.mean(out ** 2) / np.mean(clean ** 2)))
    assert abs(measured - gain) < 0.01


def test_simulated_room_reverb_keeps_the_length_and_changes_the_signal():
    clean = tone()
    out = Augmenter(only(reverb_prob=1.0), 30.0)(clean, 0)
    assert len(out) == len(clean) and np.isfinite(out).all()
    assert np.abs(out - clean).max() > 0.1


def test_impulse_response_from_a_folder_is_convolved_and_cut_to_length(tmp_path):
    ir = np.zeros(400, np.float32)
    ir[0], ir[200] = 1.0, 0.5  # the direct sound and one echo 12.5 ms later
    sf.write(tmp_path / "room.wav", ir, RATE)
    clean = tone(1.0)
    out = Augmenter(only(reverb_prob=1.0, ir_dir=str(tmp_path)), 30.0)(clean, 0)
    full = np.convolve(clean, ir)
    # audiomentations scales the convolved signal to a peak of 0.5, then cuts the tail
    np.testing.assert_allclose(out, full[: len(clean)] * 0.5 / np.abs(full).max(), atol=1e-5)


def test_seeding_is_reproducible_and_leaves_global_random_state_alone():
    aug = AugmentConfig(enabled=True, noise_prob=1.0, speed_prob=1.0, gain_prob=1.0, reverb_prob=1.0)
    clean = tone()
    random.seed(7)
    np.random.seed(7)
    before = random.random(), np.random.random()
    random.seed(7)
    np.random.seed(7)
    first = Augmenter(aug, 30.0)(clean, 11)
    assert (random.random(), np.random.random()) == before
    np.testing.assert_array_equal(first, Augmenter(aug, 30.0)(clean, 11))
    assert not np.array_equal(first, Augmenter(aug, 30.0)(clean, 12))


@pytest.fixture(scope="module")
def extractor():
    return WhisperFeatureExtractor(feature_size=80)


def clips(n: int = 6) -> Dataset:
    return Dataset.from_dict({"samples": [tone(0.5 + 0.1 * i, 300 + 50 * i) for i in range(n)],
                              "labels": [[50258, 100 + i, 50257] for i in range(n)]})


def speech(extractor, seed: int = 42) -> AugmentedSpeech:
    aug = AugmentConfig(enabled=True, noise_prob=1.0, speed_prob=0.5, gain_prob=0.5, reverb_prob=0.5)
    return AugmentedSpeech(clips(), Augmenter(aug, 30.0), extractor, seed)


def test_items_depend_on_seed_epoch_and_index_only(extractor):
    ds = speech(extractor)
    item = ds[2]
    assert item["input_features"].shape == (80, 3000) and item["input_features"].dtype == np.float32
    assert list(item["labels"]) == [50258, 102, 50257]
    np.testing.assert_array_equal(speech(extractor)[2]["input_features"], item["input_features"])
    assert not np.array_equal(speech(extractor, seed=43)[2]["input_features"], item["input_features"])
    ds.set_epoch(1)
    later = ds[2]["input_features"]
    assert not np.array_equal(later, item["input_features"])
    ds.set_epoch(0)
    np.testing.assert_array_equal(ds[2]["input_features"], item["input_features"])
    # the same clip unaugmented differs from both
    plain = extractor(clips()[2]["samples"], sampling_rate=RATE, return_tensors="np").input_features[0]
    assert not np.array_equal(plain, item["input_features"])


def test_worker_count_does_not_change_the_items_and_persistent_workers_follow_the_epoch(extractor):
    def batches(loader) -> list[np.ndarray]:
        return [b["input_features"].numpy() for b in loader]

    def loader(ds, workers):
        return torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, persistent_workers=workers > 0,
                                           collate_fn=lambda rows: {"input_features": torch.tensor(
                                               np.stack([r["input_features"] for r in rows]))})

    inline = speech(extractor)
    expected = {epoch: (inline.set_epoch(epoch), batches(loader(inline, 0)))[1] for epoch in (0, 1)}
    ds = speech(extractor)
    workers = loader(ds, 2)
    for epoch in (0, 1):  # the workers start once, at epoch 0, and are reused at epoch 1
        ds.set_epoch(epoch)
        for got, want in zip(batches(workers), expected[epoch], strict=True):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(expected[0][0], expected[1][0])


def test_item_seeds_are_distinct():
    seeds = {item_seed(42, epoch, index) for epoch in range(3) for index in range(1000)}
    assert len(seeds) == 3000


def tiny_whisper() -> WhisperForConditionalGeneration:
    config = WhisperConfig(vocab_size=120, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=64, decoder_start_token_id=1,
                           pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(config)


def encoder_inputs(model, features: torch.Tensor) -> torch.Tensor:
    seen = []
    hook = model.model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        model(input_features=features.clone(), labels=torch.tensor([[5, 6, 7]]))
    finally:
        hook.remove()
    return seen[0]


def test_spec_augment_masks_the_encoder_input_in_training_mode_only():
    model = tiny_whisper()
    aug = AugmentConfig(enabled=True, mask_time_prob=0.2, mask_time_length=10, mask_feature_prob=0.1,
                        mask_feature_length=8)
    enable_spec_augment(model.config, aug)
    assert model.config.apply_spec_augment and model.config.mask_time_prob == 0.2
    features = torch.randn(1, 80, 3000) + 5.0  # no value is 0 before masking
    model.train()
    masked = encoder_inputs(model, features)
    time_masked = (masked == 0).all(dim=1)[0]  # frames with every mel bin zeroed
    bins_masked = (masked == 0).all(dim=2)[0]
    assert 0.05 * 3000 < int(time_masked.sum()) < 0.5 * 3000 and int(bins_masked.sum()) >= 8
    model.eval()
    torch.testing.assert_close(encoder_inputs(model, features), features)


def test_prepare_data_keeps_training_audio_and_leaves_evaluation_unaugmented(tiny_whisper_dir, tmp_path):
    from whispertune.data.audio import load_audio
    from whispertune.data.features import prepare_split
    from whispertune.data.sources import load_examples
    from whispertune.model.loading import load_processor
    from whispertune.training.plan import resolve_plan
    from whispertune.training.trainer import prepare_data

    root = tmp_path / "corpus"
    for split, count in (("train", 3), ("test", 2)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            sf.write(root / split / f"c{i}.wav", tone(1.0 + 0.25 * i, 300 + 100 * i), RATE)
        (root / split / "metadata.csv").write_text(
            "file_name,text\n" + "".join(f"c{i}.wav,clip {i}\n" for i in range(count)), encoding="utf-8")
    cfg = Config()
    cfg.model.name_or_path, cfg.model.language = str(tiny_whisper_dir), "en"
    cfg.data.path, cfg.data.cache_dir = str(root), str(tmp_path / "cache")
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.augment = AugmentConfig(enabled=True, noise_prob=1.0, speed_prob=1.0, gain_prob=1.0, reverb_prob=1.0)
    plan = resolve_plan(cfg, device="cpu")
    plan.run_dir.mkdir(parents=True)
    processor = load_processor(plan.model_path, "en", "transcribe")
    train_ds, eval_ds, report = prepare_data(plan, processor, 448)

    assert isinstance(train_ds, AugmentedSpeech) and len(train_ds) == 3
    assert train_ds.rows["samples"][2].shape == (int(1.5 * RATE),)  # the decoded audio, not features
    assert report.to_dict()["augmentation"]["train"].keys() == {"noise", "speed", "gain", "reverb", "spec_augment"}
    plain = prepare_split(load_examples(cfg.data, "train"), processor, cfg.data, language="en", task="transcribe")
    assert plain.column_names[0] == "input_features"  # its own cache entry, apart from the audio one
    assert not np.array_equal(train_ds[0]["input_features"], plain.with_format("numpy")[0]["input_features"])

    assert eval_ds.column_names[0] == "input_features"
    for row in eval_ds.with_format("numpy"):
        samples = load_audio(root / "test" / f"c{row['text'].split()[-1]}.wav")
        expected = processor.feature_extractor(samples, sampling_rate=RATE, return_tensors="np").input_features[0]
        np.testing.assert_array_equal(row["input_features"], expected)
    assert Path(plan.run_dir / "data_report.json").is_file()
