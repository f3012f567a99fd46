"""Plots of a training run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def _loss_panel(ax, log_history: list[dict[str, Any]]) -> None:
    """Training loss (and eval loss, if logged) against step."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if train:
        ax.plot(*zip(*train), marker=".", label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()


def plot_loss(log_history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Training loss (and eval loss, if any) against step as a PNG; None when nothing was logged."""
    if not any("loss" in h or "eval_loss" in h for h in log_history):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    _loss_panel(ax, log_history)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_demo(log_history: list[dict[str, Any]], before: dict[str, float], after: dict[str, float],
              path: str | Path) -> Path:
    """Two panels: the training (and eval) loss, and WER/CER before and after fine-tuning."""
    fig, (loss_ax, bar_ax) = plt.subplots(1, 2, figsize=(11, 4))
    _loss_panel(loss_ax, log_history)
    loss_ax.set_title("training")
    names = ["WER", "CER"]
    xs = range(len(names))
    b = [before["wer"], before["cer"]]
    a = [after["wer"], after["cer"]]
    bar_ax.bar([x - 0.2 for x in xs], b, width=0.4, label="zero-shot")
    bar_ax.bar([x + 0.2 for x in xs], a, width=0.4, label="after LoRA")
    for x, (vb, va) in enumerate(zip(b, a)):
        bar_ax.annotate(f"{vb:.0f}", (x - 0.2, vb), ha="center", va="bottom")
        bar_ax.annotate(f"{va:.0f}", (x + 0.2, va), ha="center", va="bottom")
    bar_ax.set_xticks(list(xs), names)
    bar_ax.set_ylabel("% (test split)")
    bar_ax.set_title("error rates")
    bar_ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
