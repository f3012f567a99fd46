"""Demo settings sweep on real whisper-base: decoder-only LoRA on cached encoder outputs, CER/WER per epoch.

Reproduces `whispertune demo`'s training setup (src/whispertune/demo.py) in fp32: LoRA on
`demo.DECODER_TARGETS` of the decoder (`model.add_lora(freeze_encoder=True)`), encoder outputs computed
once and stored in float16 (as `encoder_cache` does), AdamW (weight decay 0, as the Trainer), gradient
clipping at 1.0, 10 warm-up steps then linear decay to 0 at the END of the longest epoch count, batch 16,
a seeded shuffle per epoch. The test split is scored after each listed epoch with
`inference.generation.generate_batch` on the cached encoder outputs (greedy, language mr, 96 new tokens, one batch) and `metrics.error_rates`.
Because the schedule spans the last epoch, the score "after epoch 2" of a 6-epoch run is not that of a
2-epoch run (whose learning rate would already have decayed to 0).

Usage (GPU): python benchmarks/demo_sweep.py --model DIR --corpus DIR --out results/demo_sweep.jsonl
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from whispertune.config import LoraConfig  # noqa: E402
from whispertune.demo import DECODER_TARGETS  # noqa: E402
from whispertune.inference.generation import Loaded, generate_batch  # noqa: E402
from whispertune.inference.metrics import error_rates  # noqa: E402
from whispertune.model.loading import load_processor  # noqa: E402
from whispertune.model.lora import add_lora  # noqa: E402
from whispertune.training.encoder_cache import STORE_DTYPE  # noqa: E402


def read_split(corpus: Path, split: str, limit: int | None) -> tuple[list[np.ndarray], list[str]]:
    rows = list(csv.DictReader(open(corpus / split / "metadata.csv", encoding="utf-8")))[:limit]
    audio = []
    for r in rows:
        data, sr = sf.read(corpus / split / r["file_name"], dtype="float32")
        if sr != 16000:
            raise ValueError(f"{r['file_name']}: {sr} Hz, expected 16000")
        audio.append(data)
    return audio, [r["text"] for r in rows]


@torch.inference_mode()
def encode(model, processor, audio: list[np.ndarray], dev: torch.device, batch: int = 64) -> torch.Tensor:
    """float16-stored encoder outputs, features by the batched log-Mel of common.py (same math as HF's)."""
    out = []
    encoder = model.get_encoder().eval()
    for i in range(0, len(audio), batch):
        feats = common.log_mel_batch(audio[i:i + batch], processor.feature_extractor.mel_filters, dev)
        out.append(encoder(input_features=feats).last_hidden_state.to(STORE_DTYPE))
    return torch.cat(out)


def transcripts(model, processor, hidden: torch.Tensor) -> list[str]:
    """Greedy Marathi transcripts of cached encoder outputs, in one batch, through the product's generation."""
    info = {"device": str(next(model.parameters()).device), "language": "mr", "task": "transcribe"}
    return generate_batch(Loaded(model, processor, info), hidden, encoded=True, max_new_tokens=96).texts


def labels_of(processor, texts: list[str], pad_id: int, start_id: int) -> list[torch.Tensor]:
    ids = [processor.tokenizer(t).input_ids for t in texts]  # prefix + text + <|endoftext|>
    ids = [x[1:] if x[0] == start_id else x for x in ids]  # the model prepends the start token itself
    return [torch.tensor(x) for x in ids]


def pad(seqs: list[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=-100)


def run(args, base, processor, hidden, labels, test_hidden, refs, clips, lr, r, dev, write) -> None:
    torch.manual_seed(args.seed)
    model = add_lora(copy.deepcopy(base), LoraConfig(r=r, alpha=2 * r, dropout=0.05,
                                                     target_modules=DECODER_TARGETS.split(",")),
                     freeze_encoder=True, verbose=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    per_epoch = math.ceil(clips / args.batch)
    total = per_epoch * max(args.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / 10 if s < 10 else max(0.0, (total - s) / max(1, total - 10)))
    gen = torch.Generator().manual_seed(args.seed)
    t0, step, losses = time.time(), 0, []
    for epoch in range(1, max(args.epochs) + 1):
        model.train()
        order = torch.randperm(clips, generator=gen)
        for i in range(0, clips, args.batch):
            idx = order[i:i + args.batch]
            states = hidden[idx.to(hidden.device)].float()
            lab = pad([labels[j] for j in idx.tolist()]).to(dev)
            loss = model(encoder_outputs=(states,), labels=lab).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
        if epoch in args.epochs:
            model.eval()
            hyps = transcripts(model, processor, test_hidden)
            scores = error_rates(refs, hyps, "mr")
            rec = {"clips": clips, "lr": lr, "r": r, "epoch": epoch, "steps": step, "total_steps": total,
                   "train_loss_last_epoch": round(float(np.mean(losses[-per_epoch:])), 4),
                   **{k: round(v, 2) for k, v in scores.items()}, "seconds": round(time.time() - t0, 1),
                   "example": {"ref": refs[0], "hyp": hyps[0]}}
            write(rec)
            print(f"clips={clips} lr={lr} r={r} ep={epoch} loss={rec['train_loss_last_epoch']} "
                  f"CER={scores['cer']:.1f} WER={scores['wer']:.1f} ({rec['seconds']}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--clips", default="300,600,1109")
    p.add_argument("--lrs", default="1e-3,2e-3")
    p.add_argument("--ranks", default="32,64")
    p.add_argument("--epochs", default="1,2,3,4,6")
    p.add_argument("--test", type=int, default=80)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.epochs = [int(x) for x in args.epochs.split(",")]
    dev = common.device()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 like the CPU demo
    torch.backends.cudnn.allow_tf32 = False
    from transformers import WhisperForConditionalGeneration

    processor = load_processor(args.model, "mr", "transcribe")
    base = WhisperForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).to(dev)
    base.generation_config.forced_decoder_ids = None
    clips_list = [int(x) for x in args.clips.split(",")]
    audio, texts = read_split(args.corpus, "train", max(clips_list))
    test_audio, refs = read_split(args.corpus, "test", args.test)
    t = time.time()
    hidden, test_hidden = encode(base, processor, audio, dev), encode(base, processor, test_audio, dev)
    print(f"encoded {len(audio)}+{len(test_audio)} clips in {time.time() - t:.1f}s", flush=True)
    labels = labels_of(processor, texts, base.config.pad_token_id, base.config.decoder_start_token_id)
    env = {**common.environment(), "model": "whisper-base (fp16 copy of the embedded checkpoint, run in fp32)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(rec: dict) -> None:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"bench": "demo_sweep", **rec, "test_clips": len(refs), **env},
                                ensure_ascii=False) + "\n")

    hyps = transcripts(base, processor, test_hidden)
    zero = error_rates(refs, hyps, "mr")
    write({"clips": 0, "lr": 0, "r": 0, "epoch": 0, **{k: round(v, 2) for k, v in zero.items()}})
    print(f"zero-shot CER={zero['cer']:.1f} WER={zero['wer']:.1f}", flush=True)
    for r in [int(x) for x in args.ranks.split(",")]:
        for lr in [float(x) for x in args.lrs.split(",")]:
            for clips in clips_list:
                run(args, base, processor, hidden, labels, test_hidden, refs, clips, lr, r, dev, write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
