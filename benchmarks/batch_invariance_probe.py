"""Which parts of bf16 Whisper decoding change with the batch size, on this GPU (issue 12: batched `evaluate()`
transcripts identical to unbatched decoding).

For a randomly initialised Whisper of `--arch` in bf16 (the numerics, not the weights, are the question), each
check computes one sample alone and the same sample inside a batch of `--batch` different samples, and reports
the largest absolute difference of that sample's result (0.0 = bitwise identical):
- `encoder`: the whole encoder (SDPA attention), sample 0 and sample `batch - 1`;
- `linear-*`: one row through `F.linear` with the decoder's shapes (M = 1 vs M = batch rows: one decoding step);
- `decoder-step`: logits of one decoder step with a KV cache (the step generation repeats per token), with
  SDPA, eager attention, and whispertune's batch-invariant decoding (`inference/batch_invariant.py`);
- `attention-sweep-*`: the batch-invariant mode's decoder attention itself (`batch_invariant._attention`, each
  `DECODER_ATTENTION` choice) over every KV length a decode reaches (1-448 and the encoder's 1500 frames), one
  query (a decoding step) and four (the prompt, causal mask), at `--batch` and 256 clips: how many lengths differ.
One JSON line per check goes to benchmarks/results/batch_invariance_probe.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformers import AttentionInterface  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, eager_mask  # noqa: E402

import common  # noqa: E402
from whispertune.inference.batch_invariant import make_batch_invariant  # noqa: E402


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


GROUP = 256  # heads x clips per matmul in the blocked-bmm candidate
BLOCKED = "probe_blocked_bmm"


def blocked_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, i, k) @ (n, k, j) as matmuls over groups of exactly GROUP entries (the last one zero-padded)."""
    n = a.shape[0]
    pad = -n % GROUP
    if pad:
        a = torch.cat([a, a.new_zeros(pad, *a.shape[1:])])
        b = torch.cat([b, b.new_zeros(pad, *b.shape[1:])])
    return torch.cat([torch.bmm(x, y) for x, y in zip(a.split(GROUP), b.split(GROUP))])[:n]


def blocked_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not getattr(module, "is_decoder", False):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    bsz, heads, tq, d = query.shape
    tk = key.shape[2]
    scores = blocked_bmm(query.reshape(-1, tq, d), key.reshape(-1, tk, d).transpose(1, 2)).reshape(bsz, heads, tq, tk)
    scores = scores * (scaling if scaling is not None else d ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = F.softmax(scores, dim=-1)
    out = blocked_bmm(probs.reshape(-1, tq, tk), value.reshape(-1, tk, d)).reshape(bsz, heads, tq, d)
    return out.transpose(1, 2).contiguous(), None


SWEEP_LENGTHS = [*range(1, 449, 3), 1500]


def attention_sweep(record, heads: int, dev, batches: tuple[int, ...]) -> None:
    """The product's decoder attention for clip 0 and the last clip alone vs inside a batch, per KV length."""
    import types

    from whispertune.inference import batch_invariant

    module = types.SimpleNamespace(is_decoder=True, training=False)
    original = batch_invariant.DECODER_ATTENTION
    gen = torch.Generator(device=dev).manual_seed(3)
    for choice in ("eager", "efficient"):
        batch_invariant.DECODER_ATTENTION = choice
        for b in batches:
            for q in (1, 4):
                differing, worst = [], 0.0
                for length in SWEEP_LENGTHS:
                    if length < q:
                        continue
                    shape = (b, heads, length, 64)
                    query = torch.randn(b, heads, q, 64, device=dev, generator=gen).bfloat16()
                    key = torch.randn(shape, device=dev, generator=gen).bfloat16()
                    value = torch.randn(shape, device=dev, generator=gen).bfloat16()
                    mask = None
                    if q > 1:  # causal, as eager_mask builds it: the prompt's last q positions of `length`
                        allowed = torch.ones(q, length, dtype=torch.bool, device=dev).tril(length - q)
                        mask = torch.zeros(b, 1, q, length, device=dev, dtype=torch.bfloat16).masked_fill(
                            ~allowed, torch.finfo(torch.bfloat16).min)
                    with torch.inference_mode():
                        full = batch_invariant._attention(module, query, key, value, mask, scaling=0.125)[0]
                        diff = 0.0
                        for i in (0, b - 1):
                            one = batch_invariant._attention(module, query[i:i + 1], key[i:i + 1], value[i:i + 1],
                                                             None if mask is None else mask[i:i + 1], scaling=0.125)[0]
                            diff = max(diff, max_diff(one[0], full[i]))
                    if diff:
                        differing.append(length)
                    worst = max(worst, diff)
                record(f"attention-sweep-{choice}", clips=b, heads=heads, queries=q,
                       lengths_tried=sum(1 for n in SWEEP_LENGTHS if n >= q), lengths_differing=len(differing),
                       first_differing=differing[:12], max_abs_diff=worst)
    batch_invariant.DECODER_ATTENTION = original


def first_differing(model, enc: torch.Tensor, prompt: torch.Tensor, i: int) -> list[str]:
    """Decoder modules (in execution order) whose output for clip `i` differs between the batch and clip `i`
    alone, on the prompt step: the first one names the operation that depends on the batch."""
    seen: dict[str, list[torch.Tensor]] = {}
    order: list[str] = []

    def hook(name):
        def fn(_module, _inputs, output):
            t = output[0] if isinstance(output, tuple) else output
            if isinstance(t, torch.Tensor):
                if name not in seen:
                    order.append(name)
                seen.setdefault(name, []).append(t[i if t.shape[0] == prompt.shape[0] else 0].detach().clone())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.model.decoder.named_modules() if n]
    handles.append(model.proj_out.register_forward_hook(hook("proj_out")))
    model(encoder_outputs=(enc,), decoder_input_ids=prompt, use_cache=False)
    model(encoder_outputs=(enc[i:i + 1],), decoder_input_ids=prompt[i:i + 1], use_cache=False)
    for h in handles:
        h.remove()
    return [n for n in order if len(seen[n]) == 2 and not torch.equal(seen[n][0], seen[n][1])][:6]


AttentionInterface.register(BLOCKED, blocked_attention)
AttentionMaskInterface.register(BLOCKED, eager_mask)


def main(argv: list[str] | None = None) -> int:
    from transformers import WhisperForConditionalGeneration

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--sweep-only", action="store_true", help="only the attention sweep")
    args = parser.parse_args(argv)
    env, run_id, dev, b = common.environment(), uuid.uuid4().hex[:8], common.device(), args.batch
    rows = []

    def record(check: str, **values) -> None:
        row = {"bench": "batch-invariance", "run_id": run_id, "arch": args.arch, "batch": b, "check": check,
               **values, **env}
        rows.append(row)

    torch.manual_seed(0)
    cfg = common.whisper_config(args.arch)
    for impl in () if args.sweep_only else ("sdpa", "eager", "whispertune", "blocked-bmm"):
        cfg._attn_implementation = "sdpa" if impl in ("whispertune", "blocked-bmm") else impl
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(cfg).to(dev, torch.bfloat16).eval()
        if impl in ("whispertune", "blocked-bmm"):  # what load_for_inference does by default (LoadOptions.batch_invariant)
            make_batch_invariant(model)
        if impl == "blocked-bmm":  # candidate: decoder attention's matmuls on fixed-size groups of heads
            model.set_attn_implementation(BLOCKED)
        torch.manual_seed(1)
        feats = torch.randn(b, cfg.num_mel_bins, common.ENCODER_FRAMES, device=dev, dtype=torch.bfloat16)
        with torch.inference_mode():
            enc = model.model.encoder(feats).last_hidden_state
            for i in (0, b - 1):
                alone = model.model.encoder(feats[i:i + 1]).last_hidden_state
                record(f"encoder-{impl}", sample=i, max_abs_diff=max_diff(alone[0], enc[i]))
            prompt = torch.tensor([common.PROMPT] * b, device=dev)
            out = model(encoder_outputs=(enc,), decoder_input_ids=prompt, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            step = model(encoder_outputs=(enc,), decoder_input_ids=nxt, past_key_values=out.past_key_values,
                         use_cache=True).logits[:, -1]
            for i in (0, b - 1):
                one = model(encoder_outputs=(enc[i:i + 1],), decoder_input_ids=prompt[i:i + 1], use_cache=True)
                step1 = model(encoder_outputs=(enc[i:i + 1],), decoder_input_ids=nxt[i:i + 1],
                              past_key_values=one.past_key_values, use_cache=True).logits[:, -1]
                record(f"decoder-step-{impl}", sample=i, max_abs_diff=max_diff(step1[0], step[i]),
                       prompt_logits_diff=max_diff(one.logits[0, -1], out.logits[i, -1]))
            if impl in ("whispertune", "blocked-bmm"):
                record(f"first-differing-modules-{impl}", sample=b - 1,
                       modules=first_differing(model, enc, prompt, b - 1))
        del model
        common.free_memory()
    attention_sweep(record, cfg.decoder_attention_heads, dev, tuple(sorted({b, 256})))
    d = cfg.d_model
    for name, (k, n) in {"qkvo": (d, d), "fc1": (d, cfg.decoder_ffn_dim), "fc2": (cfg.decoder_ffn_dim, d),
                         "lm-head": (d, cfg.vocab_size)}.items():
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) / k ** 0.5
        x = torch.randn(b, k, device=dev, dtype=torch.bfloat16)
        for reduced in (True, False):
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = reduced
            full = F.linear(x, w)
            record(f"linear-{name}", reduced_precision_reduction=reduced,
                   max_abs_diff=max(max_diff(F.linear(x[i:i + 1], w)[0], full[i]) for i in (0, b - 1)))
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    for row in rows:
        common.write_result("batch_invariance_probe", row, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
