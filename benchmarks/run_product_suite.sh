#!/usr/bin/env bash
# The device calls behind benchmarks/results/product_throughput.jsonl (see benchmarks/README.md).
# Usage: benchmarks/run_product_suite.sh train|offload|e2e-start|finish|identity|identity2|breakdown|fp8ab|swap|torchrun|checks|pair2|fp8tune|invariance|evalspeed|identity3|attention|refcheck|gputest|scale18|profile12|dropout12|encoder12|order18|pg18|allrows|allrows-wait CARRY_DIR [OUT]
# CARRY_DIR (first call): site.tar.xz (the wheels unpacked, bitsandbytes' CUDA 13.0 library only), cv/ (make_cv_like.sh),
# processor/ (whisper-base's processor files + model.sha256); later calls: wbpart.* (whisper-base's bf16
# model.safetensors, xz-compressed and split to fit the carry limit), en/ (English test clips, column `sentence`).
set -uo pipefail
part=$1; carry=$2; out=${3:-${OUT:-benchmarks/results}}
bench=/tmp/wt-bench work=/tmp/whispertune-product
mkdir -p "$out" "$bench/wb"
site=/tmp/site
if [ -n "${LOCAL_REHEARSAL:-}" ]; then site=/nonexistent  # CPU rehearsal: the local venv's packages
elif [ ! -f /tmp/site/.installed ]; then
  [ -f "$carry/site.tar.xz" ] || { echo "wheels gone (machine was given back): start again from the first call"; exit 3; }
  mkdir -p /tmp/site && tar -xJf "$carry/site.tar.xz" -C /tmp/site || exit 3
  # pure-Python runtime dependencies the wheel set lacks (srt, webvtt-py), copied from a local venv
  if [ -d "$carry/extra" ]; then cp -r "$carry/extra/." /tmp/site/ || exit 3; fi
  touch /tmp/site/.installed
fi
for d in cv en processor; do [ -d "$carry/$d" ] && [ ! -d "$bench/$d" ] && cp -r "$carry/$d" "$bench/$d"; done
[ -d "$carry/processor" ] && cp "$carry"/processor/* "$bench/wb/"
# each part appears by a rename: the `allrows` run in the background waits for all three
for p in "$carry"/wb/wbpart.* "$carry"/wbpart.*; do
  [ -f "$p" ] && [ ! -f "$bench/wb/${p##*/}" ] && cp "$p" "$bench/wb/.${p##*/}.tmp" && mv "$bench/wb/.${p##*/}.tmp" "$bench/wb/${p##*/}"
done
export PYTHONPATH=$site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# ARCH / E2E_TRAIN / E2E_EVAL / EVAL_CLIPS: smaller settings for a CPU rehearsal of the same commands
P="python3 benchmarks/product_throughput.py --arch ${ARCH:-large-v2} --audio $bench/cv --processor $bench/processor --work $work --num-proc 14"
T="python3 -m torch.distributed.run --standalone --nproc_per_node 1 ${P#python3 }"
# issue 18 item 4: `launches A B`: the reference config and the default preset under each launch in turn
# (plain = python, torchrun = torch.distributed.run with one rank); `checks` runs plain then torchrun and
# `pair2` (the next call) torchrun then plain, so each launch is once first and once second
# the command of a launch tag: plain, torchrun (one rank), pgplain (plain with the one-rank process group that
# accelerate sets up whenever LOCAL_RANK is set, the variables as torchrun sets them)
launcher() {
  case $1 in
    plain) echo "$P" ;;
    torchrun) echo "$T" ;;
    pgplain) echo "env RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 $P" ;;
  esac
}
# the GPU's clocks, power and temperature every second into $out/gpu_clocks.csv, until `kill $smi`
log_clocks() {
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu --format=csv -l 1 \
    > "$out/gpu_clocks.csv" 2>&1 &
  smi=$!
}
launches() {
  for tag in "$@"; do
    launch=$(launcher "$tag")
    timeout 200 $launch --results-dir "$out" --steps 18 --warmup 6 \
      --spec kind=train,preset=auto,label=$tag-default-auto \
      --spec kind=train,preset=recipe,label=$tag-recipe-reference-config
  done
}
# issue 18 item 4 with the reference config over 40 steps (34 timed; its step times follow the data, which both
# launches see in the same order, so the comparison is step for step): `launches40 A B`, then the ratios
launches40() {
  for tag in "$@"; do
    echo "launch $tag at $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
    launch=$(launcher "$tag")
    timeout 240 $launch --results-dir "$out" --steps 18 --warmup 6 \
      --spec kind=train,preset=auto,label=$tag-default-auto \
      --spec kind=train,preset=recipe,steps=40,label=$tag-recipe-reference-config
  done
  python3 benchmarks/launch_ratio.py "$out/product_throughput.jsonl" --calls "$SUITE_START"
}
SUITE_START=$(date -u +%Y-%m-%dT%H:%M:%S)
# what the product's train and evaluate paths import (a package missing from site.tar.xz + extra/ fails here, fast)
IMPORTS="import torch, transformers, peft, datasets, bitsandbytes, soundfile, srt, webvtt, platformdirs
import whispertune.training.trainer, whispertune.inference.evaluate"
# issue 12 item 2, every row in one run (one run id, one machine, the same audio folder): `allrows` starts
# `allrows-body` in the background and returns near HOLD_S; `allrows-wait` (the next calls, carrying the rest of
# whisper-base) waits on; every call returns the rows finished so far in $out
ALL=/tmp/allrows-results
allrows_wait() {
  while [ "$SECONDS" -lt "${HOLD_S:-560}" ] && [ ! -f $ALL/done ] && [ ! -f $ALL/ended ]; do sleep 5; done
  cp $ALL/* "$out/" 2>/dev/null; tail -c 2500 $ALL/log.txt
}
# issue 12: the gpu-marked batch-invariance test, then the probe at `ARCH`'s shapes
invariance_checks() {
  python3 -c "import torch, transformers, peft, datasets, bitsandbytes, soundfile, srt, webvtt, pytest" || return 4
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/inference/test_batch_invariant.py 2>&1 | tail -15
  timeout 150 python3 benchmarks/batch_invariance_probe.py --arch "$1" --results-dir "$out" 2>&1 | tail -25
}

# issue 12: the fastest preset with inductor's multi-kernel reductions (persistent reductions over rows wider than
# 1024: d_model 1280 LayerNorms and the 5120-wide FP8 quantizations in one pass), with FP8 in every product
# (fp8_products=all) under multi-kernel; the best plain config last. `fp8tune_rows LIMIT_S`
fp8tune_rows() {
  timeout "$1" $P --results-dir "$out" --steps 26 --warmup 8 \
    --spec kind=train,preset=fast-fp8,batch=64,label=fast-fp8-b64 \
    --spec "kind=train,preset=fast-fp8,batch=64,compile_options=triton.multi_kernel:1,label=fast-fp8-b64-multi-kernel" \
    --spec "kind=train,preset=fast-fp8,batch=64,compile_options=triton.multi_kernel:1,fp8_products=all,label=fast-fp8-b64-all-products-multi-kernel" \
    --spec kind=train,preset=plain,batch=48,label=plain-b48
}

case "$part" in
  train)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "import torch, transformers, peft, datasets, bitsandbytes, soundfile; print(torch.__version__, transformers.__version__, peft.__version__, datasets.__version__, bitsandbytes.__version__, soundfile.__libsndfile_version__)" || exit 4
    # order = priority: the call may hit its limit; every finished row is already in $out
    timeout 560 $P --results-dir "$out" --steps 30 --warmup 10 --harness-steps 15 \
      --spec kind=train,preset=auto,label=default-auto \
      --spec kind=train,preset=recipe,steps=100,label=recipe-reference-config-100-steps \
      --spec kind=harness,preset=lean,batch=12,label=harness-lean-b12 \
      --spec kind=train,preset=fast-fp8,batch=64,label=fast-fp8-b64 \
      --spec kind=train,preset=plain,batch=48,label=plain-b48 \
      --spec kind=harness,preset=recipe,batch=8,label=harness-recipe-b8 \
      --spec kind=harness,preset=fast-fp8,batch=64,label=harness-fast-fp8-b64 \
      --spec kind=train,preset=fast,batch=48,label=fast-b48 \
      --spec kind=train,preset=plain,batch=32,label=plain-b32 \
      --spec kind=train,preset=lean,batch=14,label=lean-b14 ;;
  offload)
    # the default preset's batch with its encoder inputs in host memory; then the end-to-end run (as e2e-start)
    # at the batch of the fastest default row within the recipe's 5.45 GiB
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "import torch, transformers, peft, datasets, bitsandbytes, pytest" || exit 4
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/training/test_offload.py 2>&1 | tail -3
    timeout 420 $P --results-dir "$out" --steps 24 --warmup 8 --harness-steps 12 \
      --spec kind=train,preset=auto,label=default-auto \
      --spec kind=train,preset=recipe,label=recipe-reference-config \
      --spec kind=train,preset=auto,batch=24,label=default-auto-b24 \
      --spec kind=harness,preset=lean,batch=16,label=harness-lean-b16 \
      --spec kind=train,preset=auto,batch=20,label=default-auto-b20
    E2E_BATCH=$(python3 - "$out/product_throughput.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
run = rows[-1]["run_id"]
ok = [r for r in rows if r["run_id"] == run and r["label"].startswith("default-auto") and not r.get("error")
      and r.get("samples_per_s") and r.get("peak_gib", 99) <= 5.45]
print(max(ok, key=lambda r: r["samples_per_s"])["batch"] if ok else 0)
PY
)
    echo "e2e batch: $E2E_BATCH"
    [ "$E2E_BATCH" -gt 0 ] 2>/dev/null || exit 0
    setsid nohup $P --results-dir /tmp/e2e-results --spec "kind=e2e,train_clips=${E2E_TRAIN:-4000},eval_clips=${E2E_EVAL:-500},epochs=3,batch=$E2E_BATCH,label=e2e-default-${E2E_TRAIN:-4000}x3" \
      > /tmp/e2e.log 2>&1 < /dev/null &
    # keep the machine (and the run) until the call's limit nears; `finish` picks it up
    while [ "$SECONDS" -lt "${HOLD_S:-555}" ] && ! grep -q '"kind": "e2e"' /tmp/e2e-results/product_throughput.jsonl 2>/dev/null; do
      pgrep -f "kind=e2e" >/dev/null || break; sleep 5; done
    tail -c 1500 /tmp/e2e.log ;;
  e2e-start)
    # runs on after this call returns (new session); `eval` waits for it
    setsid nohup $P --results-dir /tmp/e2e-results --spec kind=e2e,train_clips=${E2E_TRAIN:-4000},eval_clips=${E2E_EVAL:-500},epochs=3,label=e2e-default-${E2E_TRAIN:-4000}x3 \
      > /tmp/e2e.log 2>&1 < /dev/null &
    for _ in $(seq 1 114); do sleep 5; grep -q '"kind": "e2e"' /tmp/e2e-results/product_throughput.jsonl 2>/dev/null && break
      pgrep -f "kind=e2e" >/dev/null || break; done
    tail -c 3000 /tmp/e2e.log ;;
  finish)
    # after e2e-start on the same machine: wait for it, then the rows that fit in ${DEADLINE:-300} s
    while [ -f /tmp/e2e.log ] && ! grep -q '"kind": "e2e"' /tmp/e2e-results/product_throughput.jsonl 2>/dev/null; do
      pgrep -f "kind=e2e" >/dev/null || break; sleep 3; done
    cat /tmp/e2e-results/product_throughput.jsonl >> "$out/product_throughput.jsonl" 2>/dev/null; cp /tmp/e2e.log "$out/e2e_log.txt"
    # what is left of the call's limit (LIMIT_S) after the wait goes to the evaluation rows
    timeout "$(( ${LIMIT_S:-585} - SECONDS ))" $P --results-dir "$out" --warmup 10 --harness-steps 15 \
      --spec kind=eval,batch=0,clips=${EVAL_CLIPS:-512},label=evaluate-defaults \
      --spec kind=eval-recipe,batch=8,label=recipe-eval-loop-b8 \
      --spec kind=eval,batch=128,clips=${EVAL_CLIPS:-512},label=evaluate-b128 ;;
  identity)
    # real whisper-base: evaluate() defaults vs unbatched bf16; then where the default preset's peak memory goes
    cat "$bench"/wb/wbpart.* | xz -d > "$bench/wb/model.safetensors" && \
      (cd "$bench/wb" && echo "$(cat model.sha256)  model.safetensors" | sha256sum -c) || exit 5
    timeout 200 python3 benchmarks/eval_identity.py --model-dir "$bench/wb" --audio "$bench/en:en" --audio "$bench/cv:mr" \
      --results-dir "$out"
    timeout "${DEADLINE:-300}" $P --results-dir "$out" --steps 30 --warmup 10 --harness-steps 15 \
      --spec kind=train,preset=auto,memory=1,label=default-auto-memory \
      --spec kind=harness,preset=lean,batch=12,label=harness-lean-b12 ;;
  breakdown)
    # issue 12: the harness at the default preset's batch (24, host-offloaded encoder inputs) next to the product's
    # default row, and the default row's peak split by owner without allocator history (memory=stages)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    timeout 400 $P --results-dir "$out" --steps 30 --warmup 10 --harness-steps 20 \
      --spec kind=train,preset=auto,memory=stages,label=default-auto-memory-stages \
      --spec kind=harness,preset=lean,batch=24,label=harness-lean-b24 ;;
  fp8ab)
    # issue 12: which parts of bf16 decoding change with the batch (batch_invariance_probe.py); then LoRA dropout's
    # mask drawn by ATen inside the compiled layers (preset_surgery.COMPILE_OPTIONS fallback_random, the default)
    # in the fastest preset next to the best plain config (an A/B row: compile_options=fallback_random:0)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    timeout 150 python3 benchmarks/batch_invariance_probe.py --arch base --results-dir "$out"
    timeout 150 python3 benchmarks/batch_invariance_probe.py --arch large-v2 --results-dir "$out"
    timeout 400 $P --results-dir "$out" --steps 30 --warmup 10 --harness-steps 15 \
      --spec kind=train,preset=fast-fp8,batch=64,label=fast-fp8-b64 \
      --spec kind=train,preset=plain,batch=48,label=plain-b48 \
      --spec kind=harness,preset=fast-fp8,batch=64,label=harness-fast-fp8-b64 ;;
  swap)
    # issue 18 item 4 again with the order swapped (torchrun's one rank first, then the plain runs), and fast-fp8
    # under the launcher next to its plain run
    for launch in "$T" "$P"; do
      tag=$([ "$launch" = "$P" ] && echo plain || echo torchrun1)
      timeout 280 $launch --results-dir "$out" --steps 22 --warmup 7 \
        --spec kind=train,preset=auto,label=$tag-default-auto \
        --spec kind=train,preset=recipe,label=$tag-recipe-reference-config \
        --spec kind=train,preset=fast-fp8,batch=64,label=$tag-fast-fp8-b64
    done ;;
  identity2)
    # issue 12: evaluate() defaults (batch-invariant decoding) against one clip at a time on the real whisper-base;
    # then the speed of the defaults, of transformers' default kernels and of the guide's loop (large-v2, random)
    cat "$bench"/wb/wbpart.* | xz -d > "$bench/wb/model.safetensors" && \
      (cd "$bench/wb" && echo "$(cat model.sha256)  model.safetensors" | sha256sum -c) || exit 5
    timeout 240 python3 benchmarks/eval_identity.py --model-dir "$bench/wb" --audio "$bench/en:en" --audio "$bench/cv:mr" \
      --results-dir "$out"
    timeout 200 $P --results-dir "$out" \
      --spec kind=eval,batch=0,clips=512,label=evaluate-defaults \
      --spec kind=eval,batch=0,clips=512,invariant=0,label=evaluate-default-kernels \
      --spec kind=eval-recipe,batch=8,label=recipe-eval-loop-b8 ;;
  torchrun)
    # issue 18 item 4: the reference config and the default preset, each run plainly and under torchrun with one
    # rank (the same train() through torch.distributed.run: process group, DDP wrapper, per-rank placement);
    # the newest torchrun1-* rows should be within 5 % of the plain rows' samples_per_s (printed at the end)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    for launch in "$P" "$T"; do
      tag=$([ "$launch" = "$P" ] && echo plain || echo torchrun1)
      timeout 270 $launch --results-dir "$out" --steps 30 --warmup 10 \
        --spec kind=train,preset=auto,label=$tag-default-auto \
        --spec kind=train,preset=recipe,label=$tag-recipe-reference-config
    done
    python3 - "$out/product_throughput.jsonl" <<'PY'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1])) if r.get("samples_per_s")}
for name in ("default-auto", "recipe-reference-config"):
    plain, ranked = rows.get(f"plain-{name}"), rows.get(f"torchrun1-{name}")
    if plain and ranked:
        ratio = ranked["samples_per_s"] / plain["samples_per_s"]
        print(f"{name}: plain {plain['samples_per_s']} samples/s, torchrun 1 rank {ranked['samples_per_s']} ({ratio:.3f}x)")
PY
    ;;
  checks)
    # issue 12: the gpu-marked batch-invariance test and the large-v2 probe; then issue 18 item 4 (first half)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    invariance_checks large-v2 || exit 4
    launches plain torchrun ;;
  pair2)
    launches torchrun plain ;;
  fp8tune)
    fp8tune_rows 330 ;;
  invariance)
    # issue 12: the same checks on whisper-base shapes (encoder in groups of clips)
    invariance_checks base ;;
  attention)
    # issue 12, first call: the gpu-marked test with each decoder attention (eager / SDPA memory-efficient), the
    # attention sweep over KV lengths (whisper-base and large-v2 shapes), then evaluation speed on 1024 clips
    # (4 batches of 256) with each choice, transformers' default kernels, and the guide's loop over 8 batches
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "import torch, transformers, peft, datasets, bitsandbytes, soundfile, srt, webvtt, pytest" || exit 4
    timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/inference/test_batch_invariant.py 2>&1 | tail -8
    timeout 150 python3 benchmarks/batch_invariance_probe.py --arch base --results-dir "$out" 2>&1 | tail -5
    timeout 90 python3 benchmarks/batch_invariance_probe.py --arch large-v2 --sweep-only --results-dir "$out" 2>&1 | tail -5
    python3 - "$out/batch_invariance_probe.jsonl" <<'PY'
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    if r["check"].startswith(("attention-sweep", "decoder-step")):
        print(r["arch"], r["check"], {k: r.get(k) for k in ("clips", "queries", "lengths_differing", "first_differing", "max_abs_diff")})
PY
    timeout "$(( ${LIMIT_S:-570} - SECONDS ))" $P --results-dir "$out" \
      --spec kind=eval,batch=0,clips=1024,label=evaluate-defaults-eager \
      --spec kind=eval,batch=0,clips=1024,attention=efficient,label=evaluate-defaults-efficient-attention \
      --spec kind=eval-recipe,batch=8,batches=8,label=recipe-eval-loop-b8 \
      --spec kind=eval,batch=0,clips=1024,invariant=0,label=evaluate-default-kernels ;;
  refcheck)
    # issue 18 item 4: the reference config plainly (device_map auto), plainly with device_map cuda:0 (what a rank
    # gets under torchrun) and under torchrun with one rank, 26 steps each with every step time kept; then fp8tune
    for tag in plain plain-cuda0 torchrun; do
      launch=$([ "$tag" = torchrun ] && echo "$T" || echo "$P")
      extra=$([ "$tag" = plain-cuda0 ] && echo ",set=quantization.device_map=cuda:0" || echo "")
      timeout 120 $launch --results-dir "$out" --steps 26 --warmup 6 \
        --spec "kind=train,preset=recipe$extra,label=$tag-recipe-reference-config"
    done
    fp8tune_rows "$(( ${LIMIT_S:-575} - SECONDS ))" ;;
  evalspeed)
    # issue 12: evaluation speed after the guard's changes (one encoder pass per batch, hashed sampling noise) with
    # the memory-efficient decoder attention now the default; the guide's loop over 8 batches; default kernels
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "import torch, transformers, peft, datasets, bitsandbytes, soundfile, srt, webvtt, pytest" || exit 4
    timeout "$(( ${LIMIT_S:-560} - SECONDS ))" $P --results-dir "$out" \
      --spec kind=eval,batch=0,clips=1024,label=evaluate-defaults \
      --spec kind=eval-recipe,batch=8,batches=8,label=recipe-eval-loop-b8 \
      --spec kind=eval,batch=0,clips=1024,invariant=0,label=evaluate-default-kernels \
      --spec kind=eval,batch=0,clips=1024,attention=eager,label=evaluate-defaults-eager-attention ;;
  gputest)
    timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tail -8 ;;
  identity3)
    # issue 12, last call: identity on the real whisper-base with the decoder attention the sweep chose (ATTENTION)
    cat "$bench"/wb/wbpart.* | xz -d > "$bench/wb/model.safetensors" && \
      (cd "$bench/wb" && echo "$(cat model.sha256)  model.safetensors" | sha256sum -c) || exit 5
    timeout 330 python3 benchmarks/eval_identity.py --model-dir "$bench/wb" --audio "$bench/cv:mr" --audio "$bench/en:en" \
      --decoder-attention "${ATTENTION:-efficient}" --results-dir "$out" ;;
  scale18)
    # issue 18 item 4 (plain first, then torchrun with one rank)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "$IMPORTS" || exit 4
    launches40 plain torchrun ;;
  profile12)
    # issue 12: where the fastest preset's step goes now (product path, 2 profiled steps), with the narrow-side
    # FP8 rule and with FP8 everywhere under multi-kernel reductions; then issue 18's pair in the other order
    timeout 300 $P --results-dir "$out" --steps 16 --warmup 8 \
      --spec kind=train,preset=fast-fp8,batch=64,profile=1,label=fast-fp8-b64-profiled \
      --spec "kind=train,preset=fast-fp8,batch=64,compile_options=triton.multi_kernel:1,fp8_products=all,profile=1,label=fast-fp8-b64-all-products-multi-kernel-profiled"
    launches40 torchrun plain ;;
  dropout12)
    # issue 12: the fastest preset with LoRA's dropout in bf16 (preset_surgery.AutocastDropout, now fast-fp8's
    # default; profiled), against the previous fp32 dropout, plus FP8 in every product under multi-kernel
    # reductions; the best plain config last
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "$IMPORTS" || exit 4
    timeout "${LIMIT_S:-370}" $P --results-dir "$out" --steps 26 --warmup 8 \
      --spec kind=train,preset=fast-fp8,batch=64,profile=1,label=fast-fp8-b64-bf16-dropout \
      --spec "kind=train,preset=fast-fp8,batch=64,preset_fields=lora_dropout_autocast:0,label=fast-fp8-b64-fp32-dropout" \
      --spec "kind=train,preset=fast-fp8,batch=64,compile_options=triton.multi_kernel:1,fp8_products=all,label=fast-fp8-b64-bf16-dropout-all-products-multi-kernel" \
      --spec kind=train,preset=plain,batch=48,label=plain-b48 ;;
  encoder12)
    # issue 12: the fastest preset with the encoder's output handed to the decoder in bf16
    # (preset_surgery.encoder_output_in_autocast_dtype, now fast-fp8's default) against fp32 as before, plus FP8
    # in every product under multi-kernel reductions; the best plain config last
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "$IMPORTS" || exit 4
    timeout "${LIMIT_S:-380}" $P --results-dir "$out" --steps 26 --warmup 8 \
      --spec kind=train,preset=fast-fp8,batch=64,label=fast-fp8-b64 \
      --spec "kind=train,preset=fast-fp8,batch=64,preset_fields=encoder_output_autocast:0,label=fast-fp8-b64-encoder-output-fp32" \
      --spec "kind=train,preset=fast-fp8,batch=64,compile_options=triton.multi_kernel:1,fp8_products=all,label=fast-fp8-b64-all-products-multi-kernel" \
      --spec kind=train,preset=plain,batch=48,label=plain-b48 ;;
  order18)
    # issue 18 item 4: in both earlier calls the second launch was 7-11 % faster than the first, whichever
    # launcher it was (`scale18`, `profile12`). A discarded warm-up launch first, then plain, torchrun, plain;
    # the GPU's clocks, power and temperature logged every second meanwhile
    log_clocks
    timeout 100 $P --results-dir /tmp/warmup-results --steps 8 --warmup 2 \
      --spec kind=train,preset=auto,label=warmup-default-auto --spec kind=train,preset=recipe,label=warmup-recipe
    launches40 ${LAUNCHES:-plain torchrun plain}
    kill $smi ;;
  pg18)
    # issue 18 item 4: after the warm-up launch, the default preset under torchrun was 4.6-5.6 % slower than plain
    # in both orders (`order18`). Which part: torchrun's agent process, or the one-rank NCCL process group that
    # accelerate sets up whenever LOCAL_RANK is set (`pgplain`, see `launcher`)? Then both ratios against plain
    log_clocks
    timeout 100 $P --results-dir /tmp/warmup-results --steps 8 --warmup 2 --spec kind=train,preset=auto,label=warmup-default-auto
    for tag in ${LAUNCHES:-plain pgplain torchrun plain}; do
      echo "launch $tag at $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
      timeout 150 $(launcher "$tag") --results-dir "$out" --steps 24 --warmup 6 --spec kind=train,preset=auto,label=$tag-default-auto
    done
    kill $smi
    for l in torchrun pgplain; do python3 benchmarks/launch_ratio.py "$out/product_throughput.jsonl" --calls "$SUITE_START" --launcher $l; done ;;
  allrows)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
    python3 -c "$IMPORTS" || exit 4
    rm -rf $ALL && mkdir -p $ALL
    # the run reads its code from a snapshot: later calls lay the repository copy anew under a running bash
    rm -rf /tmp/allrows-code && mkdir -p /tmp/allrows-code && cp -r src benchmarks configs /tmp/allrows-code/
    carry_abs=$(cd "$carry" && pwd)
    # `ended` (its exit status) tells the waiting calls that it stopped, done or not. Only the background command
    # may hold an inherited descriptor: `(cd X && cmd &)` backgrounds the whole list, whose subshell kept the
    # call's stdout open until the body ended (so the call never returned before it), and the caller may hand
    # down more pipes than 0-2
    ( cd /tmp/allrows-code || exit 1
      for fd in /proc/$BASHPID/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done
      setsid nohup bash -c 'bash benchmarks/run_product_suite.sh allrows-body "$0" "$1"; echo $? > "$1/ended"' \
        "$carry_abs" $ALL > $ALL/log.txt 2>&1 < /dev/null & )
    allrows_wait ;;
  allrows-wait)
    allrows_wait ;;
  allrows-body)
    id=${RUN_ID:-$(python3 -c "import uuid; print(uuid.uuid4().hex[:8])")}
    $P --run-id "$id" --results-dir "$out" --steps 30 --warmup 10 --harness-steps 15 \
      --spec kind=train,preset=auto,label=default-auto \
      --spec kind=train,preset=recipe,steps=40,label=recipe-reference-config \
      --spec kind=harness,preset=lean,batch=24,label=harness-lean-b24 \
      --spec kind=harness,preset=recipe,batch=8,label=harness-recipe-b8 \
      --spec kind=train,preset=fast-fp8,batch=64,label=fast-fp8-b64 \
      --spec kind=harness,preset=fast-fp8,batch=64,label=harness-fast-fp8-b64 \
      --spec kind=train,preset=plain,batch=48,label=plain-b48 \
      --spec kind=train,preset=plain,batch=32,label=plain-b32 \
      --spec kind=eval,batch=0,clips=1024,label=evaluate-defaults \
      --spec kind=eval-recipe,batch=8,batches=8,label=recipe-eval-loop-b8 \
      --spec kind=e2e,train_clips=${E2E_TRAIN:-4000},eval_clips=${E2E_EVAL:-500},epochs=3,label=e2e-default-${E2E_TRAIN:-4000}x3 || exit 5
    # identity on the real whisper-base once its WB_PARTS parts have arrived (the later calls carry them)
    while [ "$(ls "$bench"/wb/wbpart.a? 2>/dev/null | wc -l)" -lt "${WB_PARTS:-3}" ]; do sleep 5; done
    cat "$bench"/wb/wbpart.a? | xz -d > "$bench/wb/model.safetensors" && \
      (cd "$bench/wb" && echo "$(cat model.sha256)  model.safetensors" | sha256sum -c) && \
      python3 benchmarks/eval_identity.py --run-id "$id" --model-dir "$bench/wb" --audio "$bench/cv:mr" \
        --audio "$bench/en:en" --results-dir "$out"
    touch "$out/done" ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
