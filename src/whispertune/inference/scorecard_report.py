"""The scorecard's rows, the user's thresholds on them, and its three files: scorecard.json, scorecard.md
and scorecard.png (base vs tuned, one panel per row), each written atomically.

Thresholds (`--fail-on forgetting=5,loop_rate=2`): a row, or an alias of one, and a limit in the row's unit.
A row crosses its threshold when the tuned model is worse than the base by more than the limit: higher
for rows where lower is better (WER, loop rate, words on no speech), lower for the others (language-ID
accuracy, chrF, timestamp validity). The CLI then exits with THRESHOLD_EXIT_CODE.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_files import atomic_path, write_file_atomically
from ..errors import UserError

THRESHOLD_EXIT_CODE = 3

# key, label, unit, better ("lower" / "higher")
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("wer", "test WER, raw", "%", "lower"),
    ("cer", "test CER, raw", "%", "lower"),
    ("wer_normalized", "test WER, script-safe normalizer", "%", "lower"),
    ("cer_normalized", "test CER, script-safe normalizer", "%", "lower"),
    ("wer_whisper_basic", "test WER, Whisper's BasicTextNormalizer", "%", "lower"),
    ("cer_whisper_basic", "test CER, Whisper's BasicTextNormalizer", "%", "lower"),
    ("english_wer", "forgetting: English control WER", "%", "lower"),
    ("langid_accuracy", "language ID accuracy, none forced", "%", "higher"),
    ("translate_chrf", "translate to English: chrF", "chrF", "higher"),
    ("translate_english", "translate to English: outputs in English", "%", "higher"),
    ("no_speech_wpm", "hallucination: words/min of no speech", "wpm", "lower"),
    ("silence_wpm", "hallucination: silence", "wpm", "lower"),
    ("noise_wpm", "hallucination: noise", "wpm", "lower"),
    ("tone_wpm", "hallucination: tone", "wpm", "lower"),
    ("loop_rate", "repetition: looping outputs, greedy", "%", "lower"),
    ("loop_rate_guarded", "repetition: looping after the guard", "%", "lower"),
    ("longform_wer", "long form (transcribe): WER", "%", "lower"),
    ("longform_deletion_0-10s", "long form: deleted words, 0-10 s of window", "%", "lower"),
    ("longform_deletion_10-20s", "long form: deleted words, 10-20 s of window", "%", "lower"),
    ("longform_deletion_20-30s", "long form: deleted words, 20-30 s of window", "%", "lower"),
    ("timestamp_validity", "timestamps: valid sequences", "%", "higher"),
)
ALIASES = {"forgetting": "english_wer", "langid": "langid_accuracy", "translate": "translate_chrf",
           "hallucination": "no_speech_wpm", "loops": "loop_rate", "longform": "longform_wer",
           "timestamps": "timestamp_validity"}
MAIN_ROWS = ("wer_normalized", "cer_normalized", "english_wer", "langid_accuracy", "translate_chrf",
             "no_speech_wpm", "loop_rate", "longform_wer", "timestamp_validity")


@dataclass
class Row:
    key: str
    label: str
    unit: str
    better: str
    base: float | None
    tuned: float | None
    note: str = ""
    threshold: float | None = None
    failed: bool = False

    @property
    def change(self) -> float | None:
        return None if self.base is None or self.tuned is None else self.tuned - self.base

    @property
    def worsening(self) -> float | None:
        """How much worse the tuned model is (positive: worse), in the row's unit."""
        change = self.change
        return None if change is None else (change if self.better == "lower" else -change)


@dataclass
class Scorecard:
    rows: list[Row]
    info: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.failed]


def build_rows(base: dict[str, float | None], tuned: dict[str, float | None], marks_removed: float = 0.0) -> list[Row]:
    """The rows present in either model's metrics, in ROWS order, with their notes; `marks_removed`: the % of
    the test references' combining marks Whisper's BasicTextNormalizer deletes (`whisper_basic_rates`)."""
    rows = []
    removed = marks_removed
    for key, label, unit, better in ROWS:
        if key not in base and key not in tuned:
            continue
        note = ""
        if key.endswith("_whisper_basic") and removed > 0:
            note = (f"changes the script: deletes {removed:.0f} % of the references' combining marks (vowel signs, "
                    "viramas), cutting words apart; for comparison with published numbers only")
        if key == "translate_chrf" and tuned.get(key) is None:
            note = "no English references for these clips"
        rows.append(Row(key, label, unit, better, base.get(key), tuned.get(key), note))
    return rows


def parse_thresholds(spec: str | None) -> dict[str, float]:
    """"forgetting=5,loop_rate=2" -> {"english_wer": 5.0, "loop_rate": 2.0}; unknown names are a UserError."""
    if not spec:
        return {}
    known = {key for key, *_ in ROWS}
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        key = ALIASES.get(name.strip(), name.strip())
        if not sep or key not in known:
            raise UserError(f"--fail-on {part!r}: expected NAME=LIMIT with NAME one of "
                            f"{', '.join(sorted(known | set(ALIASES)))}")
        try:
            limit = float(value)
        except ValueError:
            raise UserError(f"--fail-on {part!r}: the limit must be a number (points in the row's unit)") from None
        if limit < 0:
            raise UserError(f"--fail-on {part!r}: the limit must be 0 or more")
        out[key] = limit
    return out


def apply_thresholds(card: Scorecard, thresholds: dict[str, float]) -> list[Row]:
    """Mark the rows whose tuned value is worse than the base's by more than their limit; returns those."""
    for row in card.rows:
        if row.key in thresholds:
            row.threshold = thresholds[row.key]
            row.failed = row.worsening is not None and row.worsening > row.threshold
    missing = [k for k in thresholds if k not in {r.key for r in card.rows}]
    if missing:
        raise UserError(f"--fail-on: no {', '.join(missing)} row in this scorecard (probe not run)")
    return card.failed


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def to_markdown(card: Scorecard) -> str:
    info = card.info
    lines = [f"# Scorecard: {info.get('adapter')} on {info.get('base')}", "",
             f"Language {info.get('language')}, task {info.get('task')}; data {info.get('data')} "
             f"(split {info.get('split')}, {info.get('test_clips')} test clips); device {info.get('device')}.", "",
             "| row | base | tuned | change | better | note |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in card.rows:
        verdict = f"**FAIL** (worse by more than {r.threshold:g})" if r.failed else \
            (f"ok (limit {r.threshold:g})" if r.threshold is not None else "")
        note = "; ".join(x for x in (verdict, r.note) if x)
        lines.append(f"| {r.label} ({r.unit}) | {_fmt(r.base)} | {_fmt(r.tuned)} | {_fmt(r.change, True)} | "
                     f"{r.better} | {note} |")
    lines += [""] + [f"- {n}" for n in info.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def to_json(card: Scorecard) -> str:
    rows = [asdict(r) | {"change": r.change} for r in card.rows]
    return json.dumps({"rows": rows, "failed": [r.key for r in card.failed], "info": card.info,
                       "details": card.details}, indent=2, ensure_ascii=False, default=str) + "\n"


def plot(card: Scorecard, path: Path) -> None:
    """One small panel per row, base and tuned bars side by side (rows differ in scale and unit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in card.rows if r.base is not None or r.tuned is not None]
    cols = 4
    n_rows = max(1, (len(rows) + cols - 1) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 2.6 * n_rows), squeeze=False)
    for ax, row in zip(axes.flat, rows):
        values = [row.base or 0.0, row.tuned or 0.0]
        bars = ax.bar(["base", "tuned"], values, color=["#8c8c8c", "#d62728" if row.failed else "#1f77b4"])
        for bar, value in zip(bars, (row.base, row.tuned)):
            ax.annotate(_fmt(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)
        ax.set_title(f"{row.label} ({row.unit}, {row.better} is better)", fontsize=8, wrap=True)
        ax.set_ylim(0, max(max(values) * 1.25, 1.0))
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(f"scorecard: {card.info.get('adapter')} vs its base ({card.info.get('language')})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def print_main_rows(card: Scorecard, title: str = "scorecard: base vs tuned") -> None:
    """The MAIN_ROWS of `card` as a table on the terminal (what `whispertune demo` ends with)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name, justify in (("row", "left"), ("base", "right"), ("tuned", "right"), ("change", "right")):
        table.add_column(name, justify=justify)
    for row in (r for r in card.rows if r.key in MAIN_ROWS):
        table.add_row(f"{row.label} ({row.unit}, {row.better} is better)", _fmt(row.base), _fmt(row.tuned),
                      _fmt(row.change, True))
    Console().print(table)


def write_scorecard(card: Scorecard, out_dir: str | Path) -> dict[str, Path]:
    """scorecard.json, scorecard.md and scorecard.png in `out_dir`, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "scorecard.json", "md": out / "scorecard.md", "png": out / "scorecard.png"}
    write_file_atomically(paths["json"], to_json(card))
    write_file_atomically(paths["md"], to_markdown(card))
    plot(card, paths["png"])
    return paths
