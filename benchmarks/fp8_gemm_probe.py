"""bf16 vs FP8 (e4m3, per-row scales) matmul time for the projections of a Whisper encoder layer.

One JSON line per shape in results/fp8_gemm_probe.jsonl: forward (x W^T) and input-gradient (dy W)
products, bf16 `torch.mm` vs `torch._scaled_mm` with the operands already quantized, and the same
including the on-the-fly row quantization of the activation (what `fp8.FP8Linear` pays, uncompiled).
Usage (GPU): python benchmarks/fp8_gemm_probe.py --tokens 48000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from whispertune.model.fp8 import quantize_rows  # noqa: E402


def time_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=48000, help="rows: batch x 1500 encoder frames")
    p.add_argument("--d-model", type=int, default=1280)
    p.add_argument("--results-dir", default=str(common.RESULTS))
    args = p.parse_args(argv)
    env, d, m = common.environment(), args.d_model, args.tokens
    for name, (k, n) in {"attention projection": (d, d), "fc1": (d, 4 * d), "fc2": (4 * d, d)}.items():
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
        xq, xs = quantize_rows(x)
        wq, ws = quantize_rows(w)
        ws = ws.t().contiguous()
        bf16 = time_ms(lambda: x @ w.t())  # noqa: B023 (timed here, within this iteration)
        fp8 = time_ms(lambda: torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16))  # noqa: B023

        def quantize_and_mm():
            q, s = quantize_rows(x)  # noqa: B023 (called within this iteration)
            return torch._scaled_mm(q, wq.t(), scale_a=s, scale_b=ws, out_dtype=torch.bfloat16)  # noqa: B023

        with_quant = time_ms(quantize_and_mm)
        flops = 2 * m * k * n
        common.write_result("fp8_gemm_probe", {
            "bench": "fp8_gemm", "shape": name, "m": m, "k": k, "n": n, **env,
            "bf16_ms": round(bf16, 3), "fp8_ms": round(fp8, 3), "fp8_with_quant_ms": round(with_quant, 3),
            "bf16_tflops": round(flops / bf16 / 1e9, 1), "fp8_tflops": round(flops / fp8 / 1e9, 1),
            "speedup": round(bf16 / fp8, 2), "speedup_with_quant": round(bf16 / with_quant, 2),
        }, Path(args.results_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
