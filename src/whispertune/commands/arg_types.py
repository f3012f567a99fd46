"""argparse `type=` functions that check a numeric option's range, so every numeric flag of every command is
refused up front, in one line naming the flag and the valid range (argparse adds `argument --flag:`).

The limits are the values the code can honour: a larger batch than 4096 windows or clips would not fit any
accelerator, Whisper's decoder has 448 positions, and it hears at most 30 s at a time.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_BATCH = 4096
MAX_DECODER_TOKENS = 448  # Whisper's max_target_positions (the model's own prompt is checked once it is loaded)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    left = "(" if lo_open else "["
    return f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"


def int_in(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (None: unbounded on that side)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer in {_bounds(lo, hi)}")
        return value

    return parse


def float_in(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi], or (lo, hi] with `lo_open`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        below = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or below or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"got {text!r}, expected a number in {_bounds(lo, hi, lo_open)}")
        return value

    return parse


BATCH_SIZE = int_in(1, MAX_BATCH)
NEW_TOKENS = int_in(1, MAX_DECODER_TOKENS)
COUNT = int_in(1)  # a number of samples, sentences, voices, workers...
SEED = int_in(0, 2**32 - 1)  # what numpy and torch accept
