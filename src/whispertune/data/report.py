"""What happened to every example: counts per split and reason, plus each skipped example by id and file.

Counting convention (the same split key must be used by every stage):
- `seen`: rows read from the source (`sources.load_examples` counts them; `features.prepare_split`
  counts them itself when the split was not registered by a source).
- `skipped`: rows dropped, by reason; every one is also listed in `examples`.
- `kept`: rows in the final dataset (set by the last stage; otherwise `seen - skipped`).
- `unused`: `seen - kept - skipped`, rows never looked at because of a `max_*_samples` limit.
- `packing` (only for a packed training split, data/packing.py): how many windows hold its kept rows, and how
  many windows hold 1, 2, ... of them; `kept` still counts rows (clips), not windows.
- `flagged` (only for a split that data triage looked at, data/triage.py): rows that look wrong but were used
  unless dropped, by reason, with a few examples each; a dropped flagged row is also counted as skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_files import write_file_atomically

REPORT_FILENAME = "data_report.json"
SKIP_LOG_FILENAME = "data_skips.jsonl"  # a streamed split's skipped rows as they pass (SkipLog)


@dataclass
class SplitStats:
    seen: int = 0
    skipped: Counter = field(default_factory=Counter)
    kept_override: int | None = None

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def kept(self) -> int:
        return self.kept_override if self.kept_override is not None else max(self.seen - self.skipped_total, 0)

    @property
    def unused(self) -> int:
        return max(self.seen - self.kept - self.skipped_total, 0)


FLAG_EXAMPLES = 5  # examples kept per flag reason: enough to see what is wrong, not a second copy of the data


@dataclass
class FlagStats:
    """Flagged rows of one split: distinct row ids, counts by reason, the first examples of each reason, and
    what the triage was run with (thresholds, whether flagged rows were dropped, notes)."""

    ids: set = field(default_factory=set)
    by_reason: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": len(self.ids), "by_reason": dict(self.by_reason.most_common()), **self.settings,
                "examples": list(self.examples)}


class DataReport:
    """Counts of seen/kept/skipped examples per split, and a list of every skipped example."""

    def __init__(self) -> None:
        self.splits: dict[str, SplitStats] = {}
        self.examples: list[dict[str, Any]] = []
        self.flags: dict[str, FlagStats] = {}
        self.augmentation: dict[str, Any] = {}  # split -> the on-the-fly augmentation applied to it
        self.packing: dict[str, dict[str, Any]] = {}  # split -> how its clips were packed (data/packing.py)

    def _stats(self, split: str) -> SplitStats:
        return self.splits.setdefault(split, SplitStats())

    def register(self, split: str) -> None:
        """Count `split` in the report even if no row of it is ever seen, kept or skipped."""
        self._stats(split)

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def add_seen(self, split: str, n: int = 1) -> None:
        self._stats(split).seen += n

    def set_kept(self, split: str, n: int) -> None:
        self._stats(split).kept_override = n

    def add_kept(self, split: str, n: int = 1) -> None:
        stats = self._stats(split)
        stats.kept_override = (stats.kept_override or 0) + n

    def skip(self, split: str, id: str | None, file: str | None, reason: str, detail: str = "") -> None:
        """Record one skipped example; `reason` is a short tag such as `missing_file` or `too_long`."""
        self._stats(split).skipped[reason] += 1
        self.examples.append(
            {"split": split, "id": None if id is None else str(id), "file": file, "reason": reason, "detail": detail}
        )

    def flag(self, split: str, id: str, file: str | None, reason: str, *, text: str, duration: float,
             value: float) -> None:
        """Record one flagged row (`reason` such as `too_fast`, `value` the measure that crossed its threshold).
        A flag does not remove the row: a caller that drops it also records it with `skip`."""
        stats = self.flags.setdefault(split, FlagStats())
        stats.ids.add(str(id))
        stats.by_reason[reason] += 1
        if sum(e["reason"] == reason for e in stats.examples) < FLAG_EXAMPLES:
            stats.examples.append({"id": str(id), "file": file, "reason": reason, "text": text,
                                   "duration": round(float(duration), 3), "value": round(float(value), 2)})

    def set_flag_settings(self, split: str, **settings: Any) -> None:
        """What the triage of `split` ran with: thresholds, `dropped`, notes; marks the split as triaged."""
        self.flags.setdefault(split, FlagStats()).settings.update(settings)

    def flagged(self, split: str) -> dict[str, int]:
        return dict(self.flags[split].by_reason) if split in self.flags else {}

    def flag_line(self, split: str) -> str:
        """One line, e.g. "data triage (train): 2 of 480 rows flagged (1 too_fast, 1 too_slow); kept, not dropped"."""
        stats = self.flags.get(split)
        if stats is None:
            return f"data triage ({split}): not run (a streamed split is not triaged; whispertune data check is)"
        text = f"data triage ({split}): {len(stats.ids)} of {stats.settings.get('rows_checked', '?')} rows flagged"
        if stats.by_reason:
            text += " (" + ", ".join(f"{n} {r}" for r, n in stats.by_reason.most_common()) + ")"
            dropped = stats.settings.get("dropped", 0)
            text += f"; {dropped} dropped" if dropped else "; kept, not dropped"
        if stats.settings.get("note"):
            text += f"; {stats.settings['note']}"
        return text

    def seen(self, split: str) -> int:
        return self._stats(split).seen if split in self.splits else 0

    def kept(self, split: str) -> int:
        return self.splits[split].kept if split in self.splits else 0

    def skipped(self, split: str) -> dict[str, int]:
        return dict(self.splits[split].skipped) if split in self.splits else {}

    def main_reason(self, split: str) -> str | None:
        counts = self.skipped(split)
        return max(counts, key=counts.get) if counts else None

    def summary_line(self) -> str:
        """One line, e.g. "train: 480 kept, 3 skipped (2 empty_text, 1 too_long); test: 50 kept, 0 skipped"."""
        parts = []
        for name, stats in self.splits.items():
            text = f"{name}: {stats.kept} kept, {stats.skipped_total} skipped"
            if stats.skipped:
                text += " (" + ", ".join(f"{n} {r}" for r, n in stats.skipped.most_common()) + ")"
            if stats.unused:
                text += f", {stats.unused} unused (max samples)"
            if name in self.packing:
                text += f", packed into {self.packing[name]['windows']} windows"
            parts.append(text)
        return "; ".join(parts) if parts else "no data"

    def _split_dict(self, name: str, s: SplitStats) -> dict[str, Any]:
        out = {"seen": s.seen, "kept": s.kept, "skipped_total": s.skipped_total,
               "skipped": dict(s.skipped.most_common()), "unused": s.unused}
        if name in self.flags:
            out["flagged"] = self.flags[name].to_dict()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": {name: self._split_dict(name, s) for name, s in self.splits.items()},
            "skipped_examples": list(self.examples),
            "summary": self.summary_line(),
            **({"augmentation": dict(self.augmentation)} if self.augmentation else {}),
            **({"packing": dict(self.packing)} if self.packing else {}),
        }

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON; a directory gets `data_report.json` inside it. Returns the file."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / REPORT_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        return path


class SkipLog:
    """Skipped rows of a streamed split, appended to a JSON-lines file as the stream meets them.

    A stream is featurized where it is read: in DataLoader worker processes, on every rank, each with its own
    copy of whatever report it was given. Each skip is one line appended to one file (a short O_APPEND write),
    so that the process writing `data_report.json` sees them all; `count_into` fills a report from it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def add(self, split: str, id: str | None, file: str | None, reason: str, detail: str = "") -> None:
        line = json.dumps({"split": split, "id": id, "file": file, "reason": reason, "detail": detail},
                          ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def count_into(self, report: DataReport, split: str, kept: int) -> None:
        """The skips logged for `split` (each id once: a resumed or a second pass meets rows again) and
        `kept` rows that passed into training; seen = kept + skipped."""
        found: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line torn by a kill mid-write
                    continue
                if entry.get("split") == split:
                    found.setdefault(str(entry.get("id")), entry)
        report.register(split)
        for entry in found.values():
            report.skip(split, entry["id"], entry["file"], entry["reason"], entry["detail"])
        report.add_seen(split, kept + len(found))
        report.set_kept(split, kept)
