"""GPU kernel time of training steps, top kernels first (CUDA only).

    python benchmarks/profile_train_step.py preset=fast-fp8,batch=32 preset=fast,batch=32

Each argument is a train_throughput.py spec (large-v2 architecture, random weights, 40 label tokens);
3 warm-up steps, then 2 profiled steps; prints the GPU time per step and the 22 costliest kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import train_throughput  # noqa: E402


def profile(spec: str, model_dir: Path, top: int = 22) -> None:
    preset, _ = train_throughput.parse_spec(spec)
    torch._dynamo.reset()
    common.free_memory()
    model = train_throughput.build(model_dir, preset)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    b = preset.batch_size
    feats = torch.randn(b, 80, common.ENCODER_FRAMES, device="cuda")
    labels = torch.randint(0, common.EOT, (b, 40), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_features=feats, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_time_total]
    total_ms = sum(e.device_time_total for e in kernels) / 2 / 1000
    print(f"== {spec}: {total_ms:.1f} ms GPU per step", flush=True)
    for e in sorted(kernels, key=lambda e: -e.device_time_total)[:top]:
        print(f"{e.device_time_total / 2 / 1000:8.1f} ms {e.count // 2:5d}x  {e.key[:110]}", flush=True)


def main(argv: list[str]) -> int:
    common.quiet()
    model_dir = common.random_checkpoint("large-v2", Path("/tmp/whispertune-bench"))
    for spec in argv or ["preset=fast-fp8,batch=32"]:
        profile(spec, model_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
