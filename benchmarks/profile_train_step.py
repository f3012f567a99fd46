"""GPU kernel time of training steps, top kernels first (CUDA only).

    python benchmarks/profile_train_step.py preset=fast-fp8,batch=32 preset=fast,batch=32

Each argument is a train_throughput.py spec (large-v2 architecture, random weights, 40 label tokens);
3 warm-up steps, then 2 profiled steps; prints the GPU time per step and the 22 costliest kernels.
`ProfileSteps` takes the same table from inside `whispertune.train()` (product_throughput.py `profile=1`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

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
    print("\n".join(kernel_table(prof, spec, steps=2, top=top)), flush=True)


def kernel_table(prof: torch.profiler.profile, title: str, steps: int, top: int = 22) -> list[str]:
    """GPU time per step, then the `top` costliest kernels (ms per step, launches per step, name); on a CPU
    (a rehearsal) the operators' own CPU time instead."""
    gpu = torch.cuda.is_available()
    spent = (lambda e: e.device_time_total) if gpu else (lambda e: e.self_cpu_time_total)
    kernels = [e for e in prof.key_averages() if spent(e)]
    total_ms = sum(spent(e) for e in kernels) / steps / 1000
    lines = [f"== {title}: {total_ms:.1f} ms {'GPU' if gpu else 'CPU'} per step"]
    for e in sorted(kernels, key=lambda e: -spent(e))[:top]:
        lines.append(f"{spent(e) / steps / 1000:8.1f} ms {e.count // steps:5d}x  {e.key[:110]}")
    return lines


class ProfileSteps(TrainerCallback):
    """Profiles optimizer steps `start` .. `start + steps - 1` of a Trainer run; `table` holds kernel_table's lines."""

    def __init__(self, start: int, title: str, steps: int = 2):
        self.start, self.steps, self.title = start, steps, title
        self.table: list[str] = []
        self._prof: torch.profiler.profile | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.start and self._prof is None:
            common.sync()
            activity = "CUDA" if torch.cuda.is_available() else "CPU"
            self._prof = torch.profiler.profile(activities=[getattr(torch.profiler.ProfilerActivity, activity)])
            self._prof.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self._prof is not None and not self.table and state.global_step == self.start + self.steps:
            common.sync()
            self._prof.__exit__(None, None, None)
            self.table = kernel_table(self._prof, self.title, self.steps)


def main(argv: list[str]) -> int:
    common.quiet()
    model_dir = common.random_checkpoint("large-v2", Path("/tmp/whispertune-bench"))
    for spec in argv or ["preset=fast-fp8,batch=32"]:
        profile(spec, model_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
