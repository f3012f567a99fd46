#!/usr/bin/env bash
# The synthetic Marathi corpus behind benchmarks/results/accuracy_*.jsonl (issue 17: augmentation effect and the
# GPU recipe for whisper-base), built with `whispertune synth` on the CPU, then packed as 16 kHz mp3 so that it
# fits the GPU machine's carry limit.
# Usage: benchmarks/build_accuracy_corpus.sh OUT [VARIANTS]
#   OUT/train       all 555 training sentences x VARIANTS voices (default 4), voice mr+f4 held out
#   OUT/dev         50 dev sentences x 2 voices (eval loss during training)
#   OUT/test        70 test sentences x 2 voices, clean (training voices, unseen sentences)
#   OUT/test_noisy  the same 70 sentences x 2 voices, white/pink noise at 10 dB SNR (a condition training never has)
#   OUT/test_voice  the same 70 sentences x 2 renditions by the held-out voice mr+f4 only
set -euo pipefail
out=$1; variants=${2:-4}; held=mr+f4
wt=${WHISPERTUNE:-.venv/bin/whispertune}
raw=$(mktemp -d)
$wt synth --out "$raw/main" --splits train --variants "$variants" --exclude-voices $held --jobs 2 --no-progress
$wt synth --out "$raw/main" --splits dev,test --variants 2 --exclude-voices $held --jobs 2 --no-progress
$wt synth --out "$raw/noisy" --splits test --variants 2 --exclude-voices $held --snr 10 --jobs 2 --no-progress
$wt synth --out "$raw/voice" --splits test --variants 2 --voices $held --jobs 2 --no-progress
pack() {  # SRC_SPLIT_DIR DEST_SPLIT_DIR: wav -> 16 kHz mono mp3, metadata.csv's file_name rewritten
  mkdir -p "$2"
  ${PYTHON:-.venv/bin/python} - "$1" "$2" <<'PY'
import csv, sys
from pathlib import Path
import soundfile as sf
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
rows = list(csv.DictReader(open(src / "metadata.csv", encoding="utf-8", newline="")))
for row in rows:
    audio, sr = sf.read(src / row["file_name"], dtype="float32")
    row["file_name"] = row["file_name"].replace(".wav", ".mp3")
    sf.write(dst / row["file_name"], audio, sr, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.5)
with open(dst / "metadata.csv", "w", encoding="utf-8", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"{dst}: {len(rows)} clips")
PY
}
pack "$raw/main/train" "$out/train"; pack "$raw/main/dev" "$out/dev"; pack "$raw/main/test" "$out/test"
pack "$raw/noisy/test" "$out/test_noisy"; pack "$raw/voice/test" "$out/test_voice"
rm -rf "$raw"
du -sh "$out"/*
