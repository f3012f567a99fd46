#!/usr/bin/env bash
# Build what run_product_suite.sh's device calls carry (all git-ignored), from a checkout set up by scripts/setup.sh:
#   .carry/   site.tar.xz (the GPU machine's missing wheels, unpacked: Python 3.12, bitsandbytes' CUDA 13.0 library
#             only), extra/ (pure-Python packages copied from .venv), cv/ (make_cv_like.sh: 448 Marathi mp3 clips +
#             64 test clips), en/ (60 English test clips, column `sentence`), processor/ (whisper-base's config and
#             processor files, model.sha256 of its bf16 weights)
#   .carry2/wbpart.aa, .carry3/wbpart.ab   whisper-base's bf16 model.safetensors, xz-compressed, in two halves
#             (one per call: each call carries at most 64 MiB); run allrows with WB_PARTS=2
# Usage: bash benchmarks/make_carry.sh [SHARED_DIR]   (SHARED_DIR: ../shared by default; takes ~6 min here)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
py=.venv/bin/python
site_packages=$($py -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pin() { grep -m1 -i "^$1==" constraints.txt; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p .carry .carry2 .carry3

# what the GPU image lacks or has in another version (its list: /work/.library/device/KINDS.md)
wheels=(transformers peft bitsandbytes datasets jiwer RapidFuzz soundfile soxr cffi pycparser tokenizers dill multiprocess)
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d "$tmp/whl" $(for w in "${wheels[@]}"; do pin "$w"; done)
mkdir "$tmp/site"
for w in "$tmp"/whl/*.whl; do unzip -q -o "$w" -d "$tmp/site"; done
find "$tmp/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda130*' -delete
tar -cJf .carry/.site.tar.xz.tmp -C "$tmp/site" . && mv .carry/.site.tar.xz.tmp .carry/site.tar.xz

rm -rf .carry/extra && mkdir .carry/extra
for m in srt.py srt_tools srt-*.dist-info webvtt webvtt_py-*.dist-info platformdirs platformdirs-*.dist-info; do
  cp -r "$site_packages"/$m .carry/extra/
done
find .carry/extra -name __pycache__ -prune -exec rm -rf {} +

assets=src/whispertune/assets
[ -d .carry/cv ] || bash "$shared/tools/make_cv_like.sh" .carry/cv $assets/sentences_mr_train.txt $assets/sentences_mr_test.txt
if [ ! -d .carry/en ]; then
  cat $assets/sentences_en_{train,dev,test}.txt > "$tmp/en.txt"
  HF_HUB_OFFLINE=1 .venv/bin/whispertune synth --language en --sentences "$tmp/en.txt" --out "$tmp/en" --splits test \
    --variants 1 --engines espeak-ng --no-progress
  sed -i '1s/^file_name,text,/file_name,sentence,/' "$tmp/en/test/metadata.csv"  # eval_identity reads `sentence`
  mv "$tmp/en" .carry/en
fi

# whisper-base (embedded:) saved in bf16, as a Hub checkpoint would be
HF_HUB_OFFLINE=1 $py - "$tmp/wb" <<'PY'
import sys
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from whispertune.pretrained.embedded import resolve_embedded
src = resolve_embedded("whisper-base")
WhisperForConditionalGeneration.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(sys.argv[1])
WhisperProcessor.from_pretrained(src).save_pretrained(sys.argv[1])
PY
rm -rf .carry/processor && mkdir .carry/processor
find "$tmp/wb" -maxdepth 1 -type f -name '*.json' -exec cp {} .carry/processor/ \;
sha256sum "$tmp/wb/model.safetensors" | cut -d' ' -f1 > .carry/processor/model.sha256
xz -T2 -9 -c "$tmp/wb/model.safetensors" > "$tmp/wb.xz"
split -n 2 -a 2 "$tmp/wb.xz" "$tmp/wbpart."
rm -f .carry2/wbpart.* .carry3/wbpart.*
mv "$tmp/wbpart.aa" .carry2/ && mv "$tmp/wbpart.ab" .carry3/
du -sh .carry .carry2 .carry3
