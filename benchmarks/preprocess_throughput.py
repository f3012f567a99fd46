"""Feature extraction throughput (clips/s): transformers' WhisperFeatureExtractor vs whispertune's batched STFT.

Clips are synthetic 16 kHz speech-like signals (harmonic tones with a moving pitch plus noise) of
random lengths between 1 and 30 s. Methods:
- `hf`: WhisperFeatureExtractor(...)(clips) on the CPU (numpy padding, then its own torch STFT);
- `batched-cpu` / `batched-cuda`: `common.log_mel_batch` on that device.
Every method is checked against `hf` (max |difference| of the log-Mel values) before it is timed.

    python benchmarks/preprocess_throughput.py --clips 256 --batch 64 --methods hf,batched-cpu,batched-cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def synth_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        t = np.arange(int(rng.uniform(1.0, 30.0) * 16000)) / 16000
        pitch = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
        phase = 2 * np.pi * np.cumsum(pitch) / 16000
        voice = sum(np.sin(k * phase) / k for k in range(1, 6))
        clips.append((0.1 * voice + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return clips


def extractor_fn(method: str, fe):
    if method == "hf":
        return lambda batch: torch.from_numpy(fe(batch, sampling_rate=16000, return_tensors="np")["input_features"])
    dev = method.split("-", 1)[1]
    return lambda batch: common.log_mel_batch(batch, fe.mel_filters, dev).cpu()


def main(argv: list[str] | None = None) -> int:
    from transformers import WhisperFeatureExtractor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mels", type=int, default=80)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--methods", default="hf,batched-cpu" + (",batched-cuda" if torch.cuda.is_available() else ""))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-dir", default=str(common.RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fe = WhisperFeatureExtractor(feature_size=args.mels, sampling_rate=16000)
    clips = synth_clips(args.clips)
    batches = [clips[i:i + args.batch] for i in range(0, len(clips), args.batch)]
    reference = extractor_fn("hf", fe)(batches[0])
    env, run_id = common.environment(), uuid.uuid4().hex[:8]
    for method in args.methods.split(","):
        fn = extractor_fn(method, fe)
        max_diff = float((fn(batches[0]) - reference).abs().max())  # also the warm-up
        times = []
        for _ in range(args.repeats):
            common.sync()
            start = time.perf_counter()
            for batch in batches:
                fn(batch)
            common.sync()
            times.append(time.perf_counter() - start)
        s = statistics.median(times)
        common.write_result("preprocess_throughput", {
            "bench": "preprocess", "run_id": run_id, "method": method, "clips": args.clips, "batch": args.batch,
            "mels": args.mels, "threads": torch.get_num_threads(), "clips_per_s": round(args.clips / s, 1),
            "max_abs_diff_vs_hf": max_diff, **env}, Path(args.results_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
