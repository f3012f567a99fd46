"""What the peak of a training step is made of: CUDA allocations live at the step's peak, by source line.

`PeakBreakdown` (a TrainerCallback) records the CUDA caching allocator's history (torch.cuda.memory's
`_record_memory_history`, the same data as PyTorch's memory visualizer) over a few optimizer steps after
warm-up, then replays the alloc/free events: the moment with the most bytes live is the step's peak. Memory
that existed before recording began (weights, optimizer states) is `baseline_gib`; the rest is grouped by
the innermost Python frame outside torch itself, so the rows name the model code that asked for the memory
(a LayerNorm in the Whisper encoder, the loss, a LoRA dropout...). The summary is plain JSON; no snapshot
file is written or read.

`MemoryStages` needs no allocator history (which torch 2.11 cannot record for compiled layers under
checkpointing, pytorch/pytorch#179536): it reads the allocator's counters at the points where each part of the
memory comes to exist and splits a steady step's peak into frozen weights, trainable LoRA parameters, their
gradients and optimizer states, and what the step itself allocates (activations, checkpoints, recomputation,
logits and temporaries), the last one by subtraction.
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


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)


class MemoryStages(TrainerCallback):
    """Peak memory of optimizer step `step`, split by what owns it (see the module docstring); `result` holds it."""

    def __init__(self, step: int = 12):
        self.step = step
        self.result: dict | None = None
        self._params: dict[str, int] = {}
        self._before = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if torch.cuda.is_available() and model is not None:
            params = list(model.parameters())
            self._params = {"frozen_weights": _bytes(p for p in params if not p.requires_grad),
                            "lora_params": _bytes(p for p in params if p.requires_grad),
                            "buffers": _bytes(model.buffers())}

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step and torch.cuda.is_available():
            torch.cuda.synchronize()
            self._before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step != self.step + 1 or not torch.cuda.is_available() or self.result is not None:
            return
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        states = 0
        if optimizer is not None:
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            states = _bytes(v for s in inner.state.values() for v in s.values() if torch.is_tensor(v))
        gib = lambda n: round(n / 2**30, 3)  # noqa: E731
        held = sum(self._params.values()) + states
        self.result = {
            "peak_gib": gib(peak), "allocated_before_step_gib": gib(self._before),
            **{f"{k}_gib": gib(v) for k, v in self._params.items()}, "optimizer_states_gib": gib(states),
            # gradients of the LoRA parameters live from backward to zero_grad: in the step, not before it
            "other_before_step_gib": gib(max(self._before - held, 0)),
            "step_allocations_gib": gib(peak - self._before),
        }
