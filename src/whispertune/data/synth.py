"""Synthesize a speech corpus (audiofolder layout) from sentences with espeak-ng and Festival.

Each sentence is spoken `variants` times with different voice settings drawn from the seed, turned
into 16 kHz mono PCM16 wav, trimmed of long silences and optionally mixed with noise at a given SNR.
`out_dir/<split>/metadata.csv` lists the clips (with `join_sentences` > 1, joined clips with their segment
times in `metadata.jsonl`: data/synth_join.py); `out_dir/corpus.json`, written last, records the
settings so that a finished corpus with the same settings is reused instead of rebuilt.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from ..errors import UserError
from .audio import SAMPLE_RATE
from .sentences import load_sentences
from .synth_engines import Voice, check_engines, draw_voices, run_espeak, run_festival
from .synth_join import group_start, join_split

MANIFEST_VERSION = 1


@dataclass
class SynthReport:
    """What a `synthesize_corpus` run produced (or found already built, `reused`)."""

    out_dir: Path
    counts: dict[str, int]
    engines: dict[str, int]
    audio_seconds: float
    failures: list[dict[str, str]]
    seconds: float
    reused: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        engines = ", ".join(f"{k} {v}" for k, v in self.engines.items())
        lines = [
            f"corpus {self.out_dir}{' (reused)' if self.reused else ''}: {sum(self.counts.values())} clips "
            f"({splits}); engines: {engines}; {self.audio_seconds / 60:.1f} min of audio; "
            f"{len(self.failures)} failed; {self.seconds:.1f} s",
            *self.notes,
        ]
        lines += [f"failed: {f['split']}/{f['file_name']}: {f['error']}" for f in self.failures[:10]]
        return "\n".join(lines)


def trim_silence(audio: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0, pad_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing stretches quieter than `threshold_db` below the loudest 10 ms frame, keeping `pad_s`."""
    frame = sr // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (threshold_db / 20))
    if len(loud) == 0:
        return audio
    pad = int(pad_s * sr)
    return audio[max(0, loud[0] * frame - pad) : min(len(audio), (loud[-1] + 1) * frame + pad)]


def make_noise(length: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white or pink (1/f power) noise."""
    white = rng.standard_normal(length)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.arange(len(spectrum), dtype=np.float64)
        freqs[0] = 1.0
        white = np.fft.irfft(spectrum / np.sqrt(freqs), n=length)
    return white / np.sqrt(np.mean(white**2))


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix seeded white or pink noise at `snr_db`; scale the mix down (both parts alike) if it would clip."""
    noise = make_noise(len(audio), rng.choice(["white", "pink"]), rng)
    power = float(np.mean(audio.astype(np.float64) ** 2))
    mixed = audio + noise * np.sqrt(power / 10 ** (snr_db / 10))
    peak = float(np.max(np.abs(mixed)))
    return (mixed * (0.99 / peak) if peak > 0.99 else mixed).astype(np.float32)


def _synthesize_clip(job: dict, binaries: Mapping[str, str], noise_snr_db: float | None) -> tuple[float, Voice]:
    """Render one clip to its final wav; returns its duration in seconds and the voice setting used.

    Raises RuntimeError on failure."""
    voice: Voice = job["voice"]
    # Festival's diphone synthesizer crashes (SIGSEGV) on rare sentence/duration combinations:
    # a slightly different tempo avoids it, so try twice more before giving up.
    tries = [voice] if voice.engine == "espeak-ng" else [voice, replace(voice, rate=voice.rate + 3), replace(voice, rate=voice.rate - 3)]
    with tempfile.TemporaryDirectory(prefix="whispertune-synth-") as tmp:
        raw = Path(tmp) / "raw.wav"
        run = run_espeak if voice.engine == "espeak-ng" else run_festival
        for voice in tries:
            error = run(binaries[voice.engine], job["text"], voice, raw)
            if error is None:
                break
        else:
            raise RuntimeError(f"{voice.engine} failed: {error}")
        audio, sr = sf.read(raw, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    audio = trim_silence(audio)
    if len(audio) < SAMPLE_RATE // 10 or float(np.max(np.abs(audio), initial=0.0)) < 1e-3:
        raise RuntimeError(f"{voice.engine} produced silence or under 0.1 s of audio")
    if noise_snr_db is not None:
        audio = add_noise(audio, noise_snr_db, np.random.default_rng(job["noise_seed"]))
    path: Path = job["path"]
    partial = path.with_suffix(".part.wav")
    sf.write(partial, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    os.replace(partial, path)
    return len(audio) / SAMPLE_RATE, voice


def _settings(language, by_split, variants, seed, noise_snr_db, engines, voices, exclude_voices, join) -> dict:
    digest = hashlib.sha256(json.dumps(by_split, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    settings = {
        "version": MANIFEST_VERSION, "language": language, "sentences_sha256": digest, "splits": list(by_split),
        "variants": variants, "seed": seed, "noise_snr_db": noise_snr_db, "engines": sorted(engines),
        "sample_rate": SAMPLE_RATE,
    }  # fmt: skip
    # recorded only when used, so that corpora built before these options existed are still reused
    if voices is not None:
        settings["voices"] = sorted(voices)
    if exclude_voices:
        settings["exclude_voices"] = sorted(exclude_voices)
    if join > 1:
        settings["join_sentences"] = join
    return settings


def _metadata_name(settings: dict) -> str:
    return "metadata.jsonl" if settings.get("join_sentences", 1) > 1 else "metadata.csv"


def _reuse(out_dir: Path, settings: dict) -> SynthReport | None:
    try:
        manifest = json.loads((out_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("settings") != settings or not all((out_dir / s / _metadata_name(settings)).is_file() for s in settings["splits"]):
        return None
    return SynthReport(**{**manifest["report"], "out_dir": out_dir, "reused": True, "seconds": 0.0})


def synthesize_corpus(
    out_dir: str | os.PathLike,
    language: str = "mr",
    sentences: str | os.PathLike | Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "dev", "test"),
    variants: int = 3,
    seed: int = 0,
    noise_snr_db: float | None = None,
    engines: Sequence[str] = ("espeak-ng", "festival"),
    jobs: int = 2,
    progress: bool = True,
    binaries: Mapping[str, str] | None = None,
    voices: Sequence[str] | None = None,
    exclude_voices: Sequence[str] = (),
    join_sentences: int = 1,
) -> SynthReport:
    """Build (or reuse) a synthetic speech corpus in `out_dir`; see the module docstring.

    `binaries` overrides the program run for an engine (`{"festival": "/opt/bin/text2wave"}`); `voices` /
    `exclude_voices` keep only / leave out voices by name (`mr+f4`, `marathi_NSK_diphone`; see `draw_voices`);
    `join_sentences` > 1 joins that many consecutive sentences, spoken by one voice, into each clip."""
    start = time.monotonic()
    out_dir = Path(out_dir)
    if variants < 1 or jobs < 1 or join_sentences < 1:
        raise UserError(f"variants, jobs and join_sentences must be at least 1 (got variants={variants}, jobs={jobs}, "
                        f"join_sentences={join_sentences})")
    if not splits:
        raise UserError("no splits to build")
    by_split = load_sentences(language, sentences, list(splits))
    if not any(by_split.values()):
        raise UserError(f"no sentences to synthesize for splits {', '.join(splits)}")
    usable, notes = check_engines(language, list(engines), binaries)
    settings = _settings(language, by_split, variants, seed, noise_snr_db, usable, voices, exclude_voices, join_sentences)
    reused = _reuse(out_dir, settings)
    if reused is not None:
        return reused

    (out_dir / "corpus.json").unlink(missing_ok=True)  # an unfinished corpus must not look finished
    work = []
    for split, texts in by_split.items():
        split_dir = out_dir / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for old in split_dir.glob("*.wav"):
            if re.fullmatch(r"j?\d{4,}_v\d+(\.part)?\.wav", old.name):  # clips of an earlier build
                old.unlink()
        for index, text in enumerate(texts, 1):
            # a joined clip is spoken by one voice: its group's first sentence's (index itself when not joining)
            first = group_start(index, join_sentences)
            for variant, voice in enumerate(draw_voices(language, split, first, variants, seed, list(usable), voices, exclude_voices)):
                name = f"{index:04d}_v{variant}.wav"
                work.append({"split": split, "text": text, "voice": voice, "path": split_dir / name,
                             "file_name": name, "noise_seed": [seed, zlib.crc32(split.encode()), index, variant],
                             "index": index, "variant": variant, "work_index": len(work)})  # fmt: skip

    done: dict[int, tuple[float, Voice]] = {}  # work index -> (seconds, voice used)
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # joined clips get their noise whole, pauses included (synth_join)
        clip_snr = noise_snr_db if join_sentences == 1 else None
        futures = {pool.submit(_synthesize_clip, job, usable, clip_snr): i for i, job in enumerate(work)}
        for future in tqdm(as_completed(futures), total=len(work), desc="synthesizing", unit="clip", disable=not progress):
            job = work[futures[future]]
            try:
                done[futures[future]] = future.result()
            except (RuntimeError, OSError, subprocess.TimeoutExpired, sf.LibsndfileError) as exc:
                failures.append({"split": job["split"], "file_name": job["file_name"], "text": job["text"], "error": str(exc)})
    if not done:
        raise UserError(f"no clip could be synthesized; first error: {failures[0]['error']}")

    if join_sentences > 1:
        counts, per_engine, seconds = _join(out_dir, by_split, work, done, join_sentences, seed, noise_snr_db, usable, notes)
    else:
        counts, per_engine = _write_metadata(out_dir, by_split, work, done, usable)
        seconds = sum(d for d, _ in done.values())
    failures.sort(key=lambda f: (f["split"], f["file_name"]))
    report = SynthReport(out_dir, counts, per_engine, round(seconds, 2), failures,
                         round(time.monotonic() - start, 2), notes=notes)  # fmt: skip
    manifest = {"settings": settings, "report": {k: v for k, v in asdict(report).items() if k not in ("out_dir", "reused")}}
    partial = out_dir / "corpus.json.part"
    partial.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(partial, out_dir / "corpus.json")
    return report


def _join(out_dir, by_split, work, done, join, seed, noise_snr_db, usable, notes) -> tuple[dict, dict, float]:
    counts, per_engine, seconds = {split: 0 for split in by_split}, {engine: 0 for engine in usable}, 0.0
    noise = None if noise_snr_db is None else (lambda audio, rng: add_noise(audio, noise_snr_db, rng))
    for split in by_split:
        rows, split_notes = join_split(out_dir / split, split, [j for j in work if j["split"] == split], done, join,
                                       seed, noise)
        notes += split_notes
        counts[split] = len(rows)
        seconds += sum(r["seconds"] for r in rows)
        for row in rows:
            per_engine[row["engine"]] += 1
    return counts, per_engine, seconds


def _write_metadata(out_dir, by_split, work, done, usable) -> tuple[dict, dict]:
    counts = {split: 0 for split in by_split}
    per_engine = {engine: 0 for engine in usable}
    for split in by_split:
        (out_dir / split / "metadata.jsonl").unlink(missing_ok=True)  # an earlier joined build's
        with open(out_dir / split / "metadata.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "text", "engine", "voice", "rate", "pitch"])
            for i, job in enumerate(work):
                if job["split"] == split and i in done:
                    v = done[i][1]
                    writer.writerow([job["file_name"], job["text"], v.engine, v.voice, v.rate, v.pitch])
                    counts[split] += 1
                    per_engine[v.engine] += 1
    return counts, per_engine
