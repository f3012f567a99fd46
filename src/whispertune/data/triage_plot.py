"""The speaking-rate distribution of a split with the triage thresholds marked (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..atomic_files import atomic_path  # noqa: E402

PLOT_FILENAME = "chars_per_second.png"


def plot_rates(rates: Sequence[float], min_cps: float, max_cps: float, path: str | Path, *, split: str = "") -> Path:
    """A histogram of chars/s (log-spaced bins: rates of flagged rows lie orders of magnitude apart) with the
    two thresholds as vertical lines, written atomically as a PNG."""
    finite = np.asarray([r for r in rates if math.isfinite(r) and r > 0], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    if finite.size:
        low = min(finite.min(), min_cps if min_cps > 0 else finite.min(), max_cps) / 1.5
        high = max(finite.max(), max_cps) * 1.5
        ax.hist(finite, bins=np.geomspace(low, high, 40), color="tab:blue", alpha=0.8, label=f"{finite.size} rows")
        ax.set_xscale("log")
    if min_cps > 0:
        ax.axvline(min_cps, color="tab:orange", linestyle="--", label=f"min {min_cps:g} chars/s (too_slow below)")
    ax.axvline(max_cps, color="tab:red", linestyle="--", label=f"max {max_cps:g} chars/s (too_fast above)")
    ax.set_xlabel("speaking rate: letters and digits (with their marks) per second of audio")
    ax.set_ylabel("rows")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"speaking rate{f' of {split}' if split else ''}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
