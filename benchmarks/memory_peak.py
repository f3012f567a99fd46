"""What the peak of a training step is made of: CUDA allocations live at the step's peak, by source line.

`PeakBreakdown` (a TrainerCallback) records the CUDA caching allocator's history (torch.cuda.memory's
`_record_memory_history`, the same data as PyTorch's memory visualizer) over a few optimizer steps after
warm-up, then replays the alloc/free events: the moment with the most bytes live is the step's peak. Memory
that existed before recording began (weights, optimizer states) is `baseline_gib`; the rest is grouped by
the innermost Python frame outside torch itself, so the rows name the model code that asked for the memory
(a LayerNorm in the Whisper encoder, the loss, a LoRA dropout...). The summary is plain JSON; no snapshot
file is written or read.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import TrainerCallback

_TORCH_INTERNAL = ("/torch/", "<frozen", "torch/_")


def _owner(frames: list[dict]) -> str:
    """`file:line function` of the innermost frame that is not torch's own code."""
    for frame in frames:
        name = frame.get("filename", "")
        if "torchinductor" in name:  # generated code of a compiled layer
            return f"inductor-compiled code {frame.get('name')}"
        if not any(part in name for part in _TORCH_INTERNAL) and name.endswith(".py"):
            short = "/".join(name.split("/")[-2:])
            return f"{short}:{frame.get('line')} {frame.get('name')}"
    return "torch internals" if frames else "no python frame"


def peak_breakdown(trace: list[dict], top: int = 15) -> dict:
    """Replay allocator events; the live allocations at the largest total, grouped by owner."""
    live: dict[int, tuple[int, str]] = {}
    total = best = 0
    best_live: dict[int, tuple[int, str]] = {}
    for event in trace:
        action, addr, size = event.get("action"), event.get("addr"), int(event.get("size", 0))
        if action == "alloc":
            live[addr] = (size, _owner(event.get("frames", [])))
            total += size
            if total > best:
                best, best_live = total, dict(live)
        elif action == "free_completed" and addr in live:
            total -= live.pop(addr)[0]
    groups: dict[str, int] = defaultdict(int)
    for size, owner in best_live.values():
        groups[owner] += size
    rows = sorted(groups.items(), key=lambda kv: -kv[1])[:top]
    return {"step_peak_over_baseline_gib": round(best / 2**30, 3),
            "top": [{"owner": owner, "gib": round(size / 2**30, 4)} for owner, size in rows]}


class PeakBreakdown(TrainerCallback):
    """Record allocator history from optimizer step `start` for `steps` steps; `result` holds the summary."""

    def __init__(self, start: int = 12, steps: int = 2):
        self.start, self.stop = start, start + steps
        self.result: dict | None = None
        self._baseline = 0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.start and torch.cuda.is_available():
            torch.cuda.synchronize()
            self._baseline = torch.cuda.memory_allocated()
            torch.cuda.memory._record_memory_history(max_entries=400_000)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.stop and torch.cuda.is_available() and self.result is None:
            torch.cuda.synchronize()
            snapshot = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
            trace = snapshot["device_traces"][torch.cuda.current_device()]
            self.result = {"baseline_gib": round(self._baseline / 2**30, 3), "events": len(trace),
                           **peak_breakdown(trace)}
