"""`whispertune data check`: the data triage of one split, by speaking rate and optionally by a model's CER.

The split is read and featurized as `train` reads it (the same feature cache), its rows flagged by speaking
rate (data/triage.py) and, with a model (a base and/or an adapter), by that model's normalized CER on each
row: above `max_cer` the transcript is as far from what the model hears as an unrelated sentence usually is
(`DEFAULT_MAX_CER`). The data is never changed. Written to `out_dir`: `data_report.json` with the split's
`flagged` section, `flagged.jsonl` (every flagged row, to fix or remove at the source) and
`chars_per_second.png`. With `drop_flagged` the report counts the flagged rows as skipped: a preview of
the split without them (`train` itself drops only speaking-rate flags, with `data.drop_flagged`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..atomic_files import write_file_atomically
from ..config import Config, DataConfig
from ..data.features import prepare_split
from ..data.report import REPORT_FILENAME, DataReport
from ..data.sources import load_examples
from ..data.triage import HIGH_CER, Flag, apply_flags, rate_flags, rate_settings, source_files, split_rows
from ..data.triage_plot import PLOT_FILENAME, plot_rates
from ..errors import UserError
from .evaluate import evaluate
from .generation import Loaded, load_for_inference
from .options import DecodingOptions, LoadOptions

# Normalized CER % above which a row is flagged. Unrelated sentence pairs of the shipped test sentences
# score 71 % (5th percentile) to 81 % (median) in English and 71 % to 86 % in Marathi, so above 75 % most
# swapped or misaligned transcripts are caught; a model that hears the language gets far lower CERs on
# rows whose transcript is right.
DEFAULT_MAX_CER = 75.0
# More rows than this share flagged by CER: the model does not know the data (a zero-shot base on a language
# it was not trained on is wrong everywhere); its flags are reported but not trusted to drop anything.
CER_TRUSTED_SHARE = 0.5
FLAGGED_ROWS_FILENAME = "flagged.jsonl"


@dataclass
class DataCheckResult:
    split: str
    rows: int  # rows of the prepared split that were checked
    flags: list[Flag]
    rates: list[float]  # chars/s of every row
    report: DataReport
    cer_trusted: bool | None = None  # None: no model was run
    files: list[Path] = field(default_factory=list)  # what was written


def _processor(cfg: Config, model: str | None, adapter: str | None, device: str | None):
    """(loaded model or None, processor, language, task): the model's when one is asked for, else the
    processor of the config's base, as `train` uses."""
    if model or adapter:
        # an adapter's whispertune.json knows its language and task better than the config defaults
        language, task = (None, None) if adapter else (cfg.model.language, cfg.model.task)
        loaded = load_for_inference(model, adapter, LoadOptions(quantization=cfg.quantization.mode, device=device,
                                                                language=language, task=task))
        return loaded, loaded.processor, loaded.info.get("language"), loaded.info.get("task", "transcribe")
    from ..languages import language_code
    from ..model.loading import load_processor, resolve_name

    code = language_code(cfg.model.language)
    processor = load_processor(resolve_name(cfg.model.name_or_path), code, cfg.model.task,
                               revision=cfg.model.revision, token=cfg.model.token)
    return None, processor, code, cfg.model.task


def _cer_flags(cfg: Config, loaded: Loaded, prepared: Any, split: str, max_cer: float, progress: bool):
    """(rows above `max_cer`, the split's corpus CER): the model's normalized CER on each row."""
    result = evaluate(loaded=loaded, dataset=prepared, split=split, normalizer=cfg.eval.normalizer, progress=progress,
                      decoding=DecodingOptions(batch_size=cfg.eval.batch_size, num_beams=cfg.generation.num_beams,
                                               max_new_tokens=cfg.generation.max_new_tokens, autocast=cfg.eval.autocast))
    flags = [Flag(index, pred.id, HIGH_CER, pred.cer_normalized,
                  f"CER {pred.cer_normalized:.0f} % > max_cer {max_cer:g} (model said {pred.hypothesis!r})")
             for index, pred in enumerate(result.predictions) if pred.cer_normalized > max_cer]
    return flags, result.cer_normalized


def check_data(cfg: Config, *, split: str | None = None, model: str | None = None, adapter: str | None = None,
               max_cer: float = DEFAULT_MAX_CER, drop_flagged: bool | None = None, device: str | None = None,
               out_dir: str | Path | None = None, progress: bool = True) -> DataCheckResult:
    """Triage `split` (default `data.train_split`) of `cfg.data`; see the module docstring. `drop_flagged`
    None: `data.drop_flagged`."""
    if not cfg.data.path:
        raise UserError("no data to check: give --config with a data section, or --data.path DIR "
                        "(and --data.source folder|manifest|disk|hub)")
    if not (math.isfinite(max_cer) and max_cer > 0):
        raise UserError(f"max_cer: got {max_cer}, expected a positive number of percent (e.g. {DEFAULT_MAX_CER:g})")
    data = dataclasses.replace(cfg.data, streaming=False)  # checked whole, with cached features
    split = split or data.train_split
    drop = data.drop_flagged if drop_flagged is None else drop_flagged
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # an unusable --out fails before anything is loaded
    loaded, processor, language, task = _processor(cfg, model, adapter, device)
    report = DataReport()
    examples = load_examples(data, split, report)
    prepared = prepare_split(examples, processor, data, language=language, task=task, report=report, split=split,
                             cache_dir=data.cache_dir,
                             max_samples=data.max_train_samples if split == data.train_split else data.max_eval_samples)
    ids, texts, durations = split_rows(prepared)
    rates, flags = rate_flags(texts, durations, ids, data.min_chars_per_second, data.max_chars_per_second)
    settings: dict[str, Any] = rate_settings(data)
    droppable = list(flags)
    trusted = None
    if loaded is not None:
        cer_flags, corpus_cer = _cer_flags(cfg, loaded, prepared, split, max_cer, progress)
        trusted = len(cer_flags) <= CER_TRUSTED_SHARE * len(prepared)
        settings.update(max_cer=max_cer, model=loaded.info.get("model"), adapter=loaded.info.get("adapter"),
                        split_cer_normalized=round(corpus_cer, 2))
        if not trusted:
            settings["note"] = (f"{len(cer_flags)} of {len(prepared)} rows are above max_cer {max_cer:g} % (split "
                                f"CER {corpus_cer:.0f} %): the model does not know this data, so its CER flags say "
                                "little about the transcripts; they are listed but never dropped")
        droppable += cer_flags if trusted else []
        flags = sorted(flags + cer_flags, key=lambda f: f.index)
    files = source_files(examples, {f.id for f in flags})
    apply_flags(prepared, flags, report, split, rows=(ids, texts, durations), files=files,
                drop=droppable if drop else (), settings=settings)
    result = DataCheckResult(split=split, rows=len(prepared), flags=flags, rates=rates, report=report,
                             cer_trusted=trusted)
    if out_dir is not None:
        result.files = _write_outputs(result, Path(out_dir), texts, durations, files, data)
    return result


def _write_outputs(result: DataCheckResult, out: Path, texts: list[str], durations: list[float],
                   files: dict[str, str], data: DataConfig) -> list[Path]:
    lines = [json.dumps({"id": f.id, "file": files.get(f.id), "reason": f.reason, "value": round(f.value, 2),
                         "duration": round(durations[f.index], 3), "text": texts[f.index], "detail": f.detail},
                        ensure_ascii=False) + "\n" for f in result.flags]
    write_file_atomically(out / FLAGGED_ROWS_FILENAME, "".join(lines))
    plot = plot_rates(result.rates, data.min_chars_per_second, data.max_chars_per_second, out / PLOT_FILENAME,
                      split=result.split)
    return [result.report.write(out / REPORT_FILENAME), out / FLAGGED_ROWS_FILENAME, plot]


def print_check(result: DataCheckResult) -> None:
    """The flag counts and examples as tables, then the report's one-line summaries."""
    console = Console()
    split_info = result.report.to_dict()["splits"][result.split]
    flagged = split_info["flagged"]
    counts = Table(title=f"whispertune data check: {result.split} ({result.rows} rows checked)", min_width=60)
    for name in ("reason", "rows", "threshold"):
        counts.add_column(name, justify="left" if name == "reason" else "right")
    thresholds = {"too_fast": f"> {flagged['max_chars_per_second']:g} chars/s",
                  "too_slow": f"< {flagged['min_chars_per_second']:g} chars/s",
                  HIGH_CER: f"> {flagged.get('max_cer', DEFAULT_MAX_CER):g} % CER"}
    for reason in ("too_fast", "too_slow", HIGH_CER):
        if reason != HIGH_CER or result.cer_trusted is not None:
            counts.add_row(reason, str(flagged["by_reason"].get(reason, 0)), thresholds[reason])
    console.print(counts)
    if flagged["examples"]:
        examples = Table(title="examples")
        for name in ("reason", "id", "seconds", "value", "text"):
            examples.add_column(name, justify="right" if name in ("seconds", "value") else "left",
                                overflow="fold" if name == "text" else "ellipsis")
        for row in flagged["examples"]:
            text = row["text"] if len(row["text"]) <= 80 else row["text"][:77] + "..."
            examples.add_row(row["reason"], row["id"], f"{row['duration']:.2f}", f"{row['value']:g}", text)
        console.print(examples)
    print(result.report.summary_line())
    print(result.report.flag_line(result.split))
