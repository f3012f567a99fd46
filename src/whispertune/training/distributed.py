"""Data-parallel training under torchrun / accelerate launch: which process this is, and how ranks agree.

The engine is transformers' Trainer with accelerate: under a launcher (`torchrun --nproc_per_node N`,
`accelerate launch`) every process trains one copy of the model on its own GPU (or CPU, gloo), the
Trainer's sampler gives each rank its share of every global batch and DDP averages the gradients. This
module only says who is rank 0 (the one process that writes into the run directory) and makes the
decisions a single process would take alone (stop on a signal, skip a non-finite step) the same on every
rank, so that no rank waits in a collective the others have left.

`rank_state()` initialises the process group early (accelerate's `PartialState`, the object the Trainer's
arguments use too), so that the run directory can be claimed by rank 0 before any model is loaded.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError, UserError

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def launched_world_size() -> int:
    """The number of processes a launcher started (WORLD_SIZE; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_state():
    """accelerate's process state: the process group is initialised here under a launcher (gloo on a CPU)."""
    from accelerate import PartialState

    _die_with_launcher()
    return PartialState(cpu=not torch.cuda.is_available())


def _die_with_launcher() -> None:
    """Linux: this rank is killed when its launcher dies. A launcher killed with -9 does not stop its ranks
    by itself; left alone, they would go on training (holding the run lock and the GPUs) with no one to
    restart or stop them, or wait forever for a rank that has gone. Killed, they leave the run as a kill
    of the whole job does: complete checkpoints and at most a staging directory, for --resume."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the launcher died before the request was in place
        os._exit(1)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _flag_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU ones
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def max_over_ranks(value: torch.Tensor | int) -> torch.Tensor | int:
    """The largest `value` of any rank (a 0-d tensor, bool for a flag, or an int; one all-reduce; `value`
    itself when not distributed). Every rank must call it at the same point of each step."""
    if not is_distributed():
        return value
    tensor = torch.as_tensor(value).to(_flag_device(), torch.int32).reshape(())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    if isinstance(value, torch.Tensor):
        return tensor.to(value.dtype)
    return int(tensor.item())


def on_main_then_shared(work: Callable[[], T]) -> T:
    """Run `work` on rank 0 and hand its result (picklable) to every rank; a UserError there is raised on
    every rank with rank 0's message, so that none waits for a rank that has stopped. Other exceptions stop
    rank 0 only (the launcher then ends the rest)."""
    if not is_distributed():
        return work()
    message, result = None, None
    if is_main():
        try:
            result = work()
        except UserError as exc:
            message = str(exc)
    box = [message, result]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise UserError(box[0])
    return box[1]


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it fills a cache), then the other ranks (they read it)."""
    if not is_distributed():
        yield
        return
    if not is_main():
        dist.barrier()
    yield
    if is_main():
        dist.barrier()


def check_distributed(plan) -> None:
    """Refuse, in one line, what does not run data-parallel (`plan`: the run's `training.plan.Plan`)."""
    if launched_world_size() <= 1:
        return
    if plan.preset is not None and plan.preset.fp8_weights:
        raise ConfigError(f"train.speed_preset={plan.preset.name}: FP8 base weights are not verified under "
                          "data-parallel training yet; use train.speed_preset=lean or fast with torchrun")
