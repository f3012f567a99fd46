"""Checkpointed encoder layers whose inputs wait in host memory between the forward and the backward.

With every layer checkpointed (the `lean` preset), what stays on the GPU through a step is the weights, one
layer's recomputed activations and each layer's input: 32 encoder inputs of (batch, 1500, d_model) bf16,
123 MB per clip on large-v2, the largest share of activation memory. `EncoderOffload` copies each
encoder layer's input to pinned host memory on a side stream while the forward goes on, frees the GPU copy,
and in the backward brings it back one layer ahead on a second side stream (layer i's recompute prefetches
layer i-1's input). The GPU then holds a step's working set only, so the same memory fits a larger batch,
and a larger batch is what a launch-bound small-batch step needs (benchmarks/NOTES.md).

The layer is checkpointed with torch's non-reentrant checkpoint as before; what it receives instead of the
input tensor is a `HostCopy`, a handle that yields the live tensor during the forward and the copy
brought back during recomputation. Same graph, same dropout masks (the checkpoint restores the RNG
state): only where the input waits changes. Decoder layers are left as they are: their inputs are ~40
tokens wide, and their shared input (the encoder output) is one tensor for all of them.
"""

from __future__ import annotations

import torch


class HostCopy:
    """One checkpointed layer's input: the live tensor until the forward returns, then a host copy.

    `previous` is the input of the layer before, whose copy `get` starts bringing back (backward runs
    the layers in reverse). On a CPU the "host copy" is a plain clone, so the same logic runs in tests.
    """

    def __init__(self, tensor: torch.Tensor, streams: _Streams | None, previous: HostCopy | None):
        self.requires_grad = tensor.requires_grad
        self.previous = previous
        self._streams = streams
        self._live: torch.Tensor | None = tensor
        self._back: tuple[torch.Tensor, torch.cuda.Event | None] | None = None
        with torch.no_grad():
            if streams is None:
                self._host, self._copied = tensor.detach().clone(), None
                return
            # same strides both ways: the compiled backward expects the layout the forward saw
            self._host = torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, pin_memory=True)
            streams.d2h.wait_stream(torch.cuda.current_stream(tensor.device))
            with torch.cuda.stream(streams.d2h):
                self._host.copy_(tensor.detach(), non_blocking=True)
                self._copied = torch.cuda.Event()
                self._copied.record(streams.d2h)
            # the caching allocator must not hand this memory out again before the copy has read it
            tensor.record_stream(streams.d2h)

    def forward_done(self) -> None:
        """Drop the GPU tensor: from now on the host copy is the only one this handle keeps."""
        self._live = None

    def prefetch(self) -> None:
        """Start copying the host copy back to the GPU on the side stream (no-op if already under way)."""
        if self._back is not None or self._live is not None:
            return
        if self._streams is None:
            self._back = (self._host.detach(), None)
            return
        h2d = self._streams.h2d
        with torch.cuda.stream(h2d):
            h2d.wait_event(self._copied)
            back = torch.empty_strided(self._host.size(), self._host.stride(), dtype=self._host.dtype,
                                       device=self._streams.device)
            back.copy_(self._host, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(h2d)
        self._back = (back, ready)

    def get(self) -> torch.Tensor:
        """The input: the live tensor in the forward, the copy brought back in the recompute."""
        if self._live is not None:
            return self._live
        self.prefetch()
        back, ready = self._back
        self._back = None
        if ready is not None:
            current = torch.cuda.current_stream(self._streams.device)
            current.wait_event(ready)
            back.record_stream(current)  # allocated on the side stream, used on this one
        if self.previous is not None:
            self.previous.prefetch()
        # the original input's requires_grad decides which ops autograd records, and so which
        # tensors the recompute saves: it must match the forward's
        return back.requires_grad_(self.requires_grad)


class _Streams:
    def __init__(self, device: torch.device):
        self.device = device
        self.d2h = torch.cuda.Stream(device)
        self.h2d = torch.cuda.Stream(device)


class EncoderOffload:
    """Owns the copies of one encoder's checkpointed layer inputs; `keep` is called once per layer, in order."""

    def __init__(self, first_layer: torch.nn.Module):
        self.first_layer = first_layer
        self._streams: _Streams | None = None
        self._last: HostCopy | None = None

    def keep(self, layer: torch.nn.Module, tensor: torch.Tensor) -> HostCopy:
        if layer is self.first_layer:  # a new forward: nothing before this layer
            self._last = None
        streams = None
        if tensor.is_cuda:
            if self._streams is None or self._streams.device != tensor.device:
                self._streams = _Streams(tensor.device)
            streams = self._streams
        self._last = HostCopy(tensor, streams, self._last)
        return self._last


def run_from_host_copy(fn, layer: torch.nn.Module, copy: HostCopy, device_marker: torch.Tensor, *args, **kwargs):
    """The checkpointed function: `fn(layer, input, ...)` with the input taken from `copy`.

    `device_marker` (an empty tensor on the input's device) is there for torch.utils.checkpoint, which
    finds the devices whose RNG state it saves and restores among its tensor arguments.
    """
    return fn(layer, copy.get(), *args, **kwargs)
