"""The options of the inference entry points, in the style of openai/whisper's `DecodingOptions`: one frozen,
commented object per concern, checked where it is built.

    load = LoadOptions(language="mr", quantization="int8")       # what load_for_inference loads
    decoding = DecodingOptions(batch_size=16, max_new_tokens=96)  # how evaluate / transcribe generate
    whispertune.evaluate(adapter="runs/mr/adapter", data=cfg.data, load=load, decoding=decoding)
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from ..config import QuantizationMode
from ..errors import ConfigError, UserError

TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class LoadOptions:
    # base weights: as stored ("none"), or quantized on load by bitsandbytes ("int8", "nf4")
    quantization: QuantizationMode = "none"
    # "cpu", "cuda", "cuda:1"; None: CUDA when a GPU is visible, else the CPU
    device: str | None = None
    # a Whisper language name or code; None: the adapter's (whispertune.json), else detected for each clip
    language: str | None = None
    # "transcribe" or "translate" (into English); None: the adapter's, else "transcribe"
    task: str | None = None
    # on CUDA: each clip gets the same transcript whatever shares its batch (inference/batch_invariant.py);
    # False: transformers' default kernels (SDPA decoder attention), whose last bits change with the batch
    batch_invariant: bool = True

    def __post_init__(self) -> None:
        if self.quantization not in typing.get_args(QuantizationMode):
            raise ConfigError(f"quantization: got {self.quantization!r}, expected one of "
                              f"{', '.join(map(repr, typing.get_args(QuantizationMode)))}")
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"task: got {self.task!r}, expected 'transcribe' or 'translate'")


@dataclass(frozen=True)
class DecodingOptions:
    # clips (or 30 s windows) per generate call; 0: by device (`resolve_batch_size`)
    batch_size: int = 0
    # tokens generated per clip at most (Whisper's decoder holds 448 positions, the prompt included)
    max_new_tokens: int = 255
    # 1: greedy decoding; more: beam search with this many beams
    num_beams: int = 1
    # quantized bases on CUDA: run under torch.autocast in their compute dtype (no effect elsewhere)
    autocast: bool = True
    # text that conditions decoding (Whisper's previous-text prompt, its last PROMPT_TOKENS tokens); never output
    prompt: str | None = None
    # 0: greedy (or beam) decoding; above 0 up to 1: sampling at this temperature, seeded by `seed`
    temperature: float = 0.0
    seed: int = 0
    # decode with Whisper's timestamp tokens: segments (and subtitle cues) timed by the model
    timestamps: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 1.0:
            raise UserError(f"temperature: got {self.temperature}, expected a number in [0, 1] (0: greedy)")
        if self.batch_size < 0:
            raise UserError(f"batch_size: got {self.batch_size}, expected a positive integer (or 0 for auto)")
        if self.max_new_tokens <= 0 or self.num_beams <= 0:
            raise UserError(f"max_new_tokens and num_beams must be positive integers, got {self.max_new_tokens} "
                            f"and {self.num_beams}")


PROMPT_TOKENS = 224  # the prompt tokens kept (its end), as OpenAI's API keeps "the final 224 tokens"


# On an 80-141 GB GPU; tokens/s of large-v2 rose with the batch up to 128-256 (docs/speed.md)
DEFAULT_GPU_BATCH = 128
DEFAULT_CPU_BATCH = 8


def resolve_batch_size(batch_size: int | None, device: str) -> int:
    """`None` or 0 (auto): DEFAULT_CPU_BATCH off CUDA; on CUDA by the GPU's memory, 2 x DEFAULT_GPU_BATCH from
    120 GiB down to 16 below 20 GiB (the sizes that fit large-v2, the largest Whisper)."""
    if batch_size:
        return batch_size
    if not str(device).startswith("cuda"):
        return DEFAULT_CPU_BATCH
    # large-v2 at 40 new tokens: batch 128 used 34 GiB, 64 used 18.6 GiB (benchmarks/results/eval_throughput.jsonl)
    total_gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
    if total_gib >= 120:  # 141 GB H200: 256 measured 3408 tok/s vs 3040 at 128 (harness, 65 GiB on large-v2)
        return 2 * DEFAULT_GPU_BATCH
    return DEFAULT_GPU_BATCH if total_gib >= 75 else 64 if total_gib >= 38 else 32 if total_gib >= 20 else 16
