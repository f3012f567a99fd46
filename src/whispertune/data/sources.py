"""Read examples from a Hub dataset, a local audio folder, a JSONL manifest or a saved dataset.

Every kind returns a dataset with exactly the columns `id` (str), `audio` (undecoded
`{"path", "bytes"}`) and `text` (str), and a `segments` column too (data/segments.py) where local rows have
segment times (None on rows without) or a Hub / saved dataset has a `segments` column (checked per row in
`features`). Rows that cannot be used (missing audio file, a manifest line
that is not JSON or not UTF-8, a missing value, a duplicate id) are skipped and counted in the
`DataReport` under the split expression given; audio is decoded later, in `features`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import datasets
from datasets import Audio, Dataset, DatasetDict, IterableDataset, Value

from ..config import DataConfig
from ..errors import AudioError, ConfigError, UserError
from .audio import check_audio_path
from .metadata import read_rows
from .report import DataReport
from .segments import SEGMENTS_FEATURE, SegmentError, column_feature, row_segments

log = logging.getLogger(__name__)

OUTPUT_FEATURES = datasets.Features({"id": Value("string"), "audio": Audio(decode=False), "text": Value("string")})
# Local rows keep the same `{"bytes", "path"}` audio entries as a plain struct: datasets' Audio feature imports
# torchcodec even to store undecoded paths, and decoding is ours (soundfile/soxr) in `features` anyway.
LOCAL_FEATURES = datasets.Features(
    {"id": Value("string"), "audio": {"bytes": Value("binary"), "path": Value("string")}, "text": Value("string")}
)
# local rows when some carry segment times
TIMED_FEATURES = datasets.Features({**LOCAL_FEATURES, "segments": SEGMENTS_FEATURE})
METADATA_NAMES = ("metadata.csv", "metadata.tsv", "metadata.jsonl")
# Values a `split` column may hold besides the splits a config names; anything else is reported, never guessed.
STANDARD_SPLITS = ("train", "validation", "valid", "dev", "test", "eval")


def split_parts(split: str) -> list[str]:
    """"train+validation" -> ["train", "validation"]. Slices ("train[:10%]") are for the hub kind only."""
    parts = [p.strip() for p in split.split("+") if p.strip()]
    if not parts:
        raise ConfigError(f"empty split expression {split!r}")
    for part in parts:
        if not re.fullmatch(r"[\w.-]+", part):
            raise ConfigError(
                f"split {part!r}: only names joined with '+' are accepted for local data "
                "(slices like train[:100] work with data.source=hub; use data.max_train_samples otherwise)"
            )
    return parts


# ---------------------------------------------------------------- local rows (folder, manifest)


def _require_column(path: Path, rows: list[tuple[int, dict]], column: str, hint: str) -> None:
    if rows and not any(column in row for _, row in rows):
        found = sorted({key for _, row in rows for key in row})
        raise UserError(f"{path}: no {column!r} column (found: {', '.join(found)}); {hint}")


def _local_rows(
    rows: list[tuple[int, dict]], source: Path, base: Path, file_key: str, text_key: str, split: str, report: DataReport
) -> list[dict[str, Any]]:
    """Check each metadata row (values present, audio file exists) and turn it into an output row."""
    out = []
    for number, row in rows:
        report.add_seen(split)
        where = f"{source.name}:{number}"
        file_value, text = row.get(file_key), row.get(text_key)
        if not isinstance(file_value, str) or not file_value:
            report.skip(split, where, str(source), "missing_column", f"line {number}: no {file_key!r} value")
            continue
        if text is None:
            report.skip(split, where, str(source), "missing_column", f"line {number}: no {text_key!r} value")
            continue
        if not isinstance(text, str):  # a JSON number, list, object or boolean is not a transcript
            report.skip(split, where, str(source), "bad_text_type",
                        f"line {number}: {text_key!r} is a JSON {type(text).__name__} ({str(text)[:40]}), not a string")
            continue
        try:
            audio_path = (base / file_value).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop (ELOOP), a name too long...
            report.skip(split, where, str(base / file_value), "unreadable_path", f"line {number}: {exc}")
            continue
        row_id = str(row["id"]) if row.get("id") not in (None, "") else str(audio_path)
        try:
            check_audio_path(audio_path)
        except AudioError as exc:  # missing, a directory, a loop or a name too long, an empty file
            report.skip(split, row_id, str(audio_path), exc.reason, f"{where}: {exc}")
            continue
        try:
            segments = row_segments(row, audio_path, where)
        except SegmentError as exc:
            report.skip(split, row_id, str(audio_path), exc.reason, str(exc))
            continue
        out.append({"id": row_id, "audio": {"path": str(audio_path), "bytes": None}, "text": text, "segments": segments})
    return out


def _folder_part(root: Path, part: str, text_key: str, split: str, report: DataReport,
                 known_splits: set[str]) -> list[dict[str, Any]]:
    for name in METADATA_NAMES:
        if (root / part / name).is_file():
            meta = root / part / name
            rows = read_rows(meta, split, report)
            break
    else:
        meta = next((root / n for n in METADATA_NAMES if (root / n).is_file()), None)
        if meta is None:
            raise UserError(f"{root}: no {part}/metadata.csv, .tsv or .jsonl, nor a metadata file at the top, found")
        rows = read_rows(meta, split, report)
        if any("split" in row for _, row in rows):
            rows = _rows_of_split(rows, meta, part, split, report, known_splits)
        elif part != "train":
            # Same rule as datasets' audiofolder: a single metadata file without a split column is "train".
            raise UserError(
                f"{root}: no split {part!r} (a single {meta.name} without a 'split' column is the 'train' split; "
                f"add a 'split' column or a {part}/ subfolder)"
            )
    _require_column(meta, rows, "file_name", "the audiofolder convention needs file_name")
    _require_column(meta, rows, text_key, "set data.text_column to the transcript column")
    return _local_rows(rows, meta, meta.parent, "file_name", text_key, split, report)


def _rows_of_split(rows: list[tuple[int, dict]], meta: Path, part: str, split: str, report: DataReport,
                   known_splits: set[str]) -> list[tuple[int, dict]]:
    """Rows whose `split` value is `part`; rows whose value names no split at all are skipped and reported."""
    mine = []
    for number, row in rows:
        value = row.get("split")
        if value == part:
            mine.append((number, row))
        elif not isinstance(value, str) or value not in known_splits:
            report.add_seen(split)
            report.skip(split, f"{meta.name}:{number}", str(meta), "unknown_split",
                        f"line {number}: split {value!r} is none of {', '.join(sorted(known_splits))} "
                        "(split values are exact and case-sensitive)")
    return mine


def _manifest_file(path: Path, part: str) -> Path:
    if "{split}" in str(path):
        return Path(str(path).replace("{split}", part))
    if path.is_dir():
        return path / f"{part}.jsonl"
    return path  # a single manifest file serves every split


def _manifest_part(path: Path, part: str, split: str, report: DataReport) -> list[dict[str, Any]]:
    manifest = _manifest_file(path, part)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest file not found (split {part!r})")
    rows = read_rows(manifest, split, report)
    _require_column(manifest, rows, "audio_filepath", "a NeMo-style manifest line is {\"audio_filepath\": ..., \"text\": ...}")
    _require_column(manifest, rows, "text", "a NeMo-style manifest line is {\"audio_filepath\": ..., \"text\": ...}")
    return _local_rows(rows, manifest, manifest.parent, "audio_filepath", "text", split, report)


def _drop_duplicates(rows: list[dict[str, Any]], split: str, report: DataReport) -> list[dict[str, Any]]:
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["id"] in seen:
            report.skip(split, row["id"], row["audio"]["path"], "duplicate_id", "an earlier row has the same id")
            continue
        seen.add(row["id"])
        unique.append(row)
    return unique


# ---------------------------------------------------------------- datasets (hub, disk)


def _standardize(ds: Dataset | IterableDataset, data: DataConfig, part: str, where: str) -> Dataset | IterableDataset:
    """Columns -> id, audio (undecoded), text; ids from an `id` column or `<part>:<row index>`."""
    columns = ds.column_names or list((ds.features or {}).keys())
    for column, key in ((data.audio_column, "data.audio_column"), (data.text_column, "data.text_column")):
        if columns and column not in columns:
            raise UserError(f"{where} (split {part!r}): no {column!r} column (found: {', '.join(columns)}); set {key}")
    ds = ds.cast_column(data.audio_column, Audio(decode=False))
    if data.audio_column != "audio":
        if "audio" in columns:
            ds = ds.remove_columns("audio")
        ds = ds.rename_column(data.audio_column, "audio")
    if data.text_column != "text":
        if "text" in columns:
            ds = ds.remove_columns("text")
        ds = ds.rename_column(data.text_column, "text")
    has_id = "id" in columns
    # segment times for timestamped labels, as local rows carry them
    timed = ["segments"] if "segments" in columns else []
    features = datasets.Features({**OUTPUT_FEATURES, **{c: column_feature(ds.features[c], where) for c in timed}})
    if isinstance(ds, Dataset):
        ids = [str(i) for i in ds["id"]] if has_id else [f"{part}:{i}" for i in range(len(ds))]
        ds = ds.select_columns(["audio", "text", *timed]).add_column("id", ids)
    else:
        ds = ds.map(lambda row, idx: {"id": str(row["id"]) if has_id else f"{part}:{idx}"}, with_indices=True)
    return ds.select_columns(["id", "audio", "text", *timed]).cast(features)


def _dedupe_dataset(ds: Dataset, split: str, report: DataReport) -> Dataset:
    seen: set[str] = set()
    keep = []
    for index, row_id in enumerate(ds["id"]):
        if row_id in seen:
            report.skip(split, row_id, None, "duplicate_id", "an earlier row has the same id")
        else:
            seen.add(row_id)
            keep.append(index)
    return ds if len(keep) == len(ds) else ds.select(keep)


def _load_hub(data: DataConfig, split: str) -> Dataset | IterableDataset:
    kwargs = dict(token=data.token, streaming=data.streaming)
    try:
        if not data.streaming:
            return _standardize(datasets.load_dataset(data.path, data.config_name, split=split, **kwargs), data, split, data.path)
        # Streaming datasets take one split at a time; parts are chained in order.
        parts = [
            _standardize(datasets.load_dataset(data.path, data.config_name, split=p, **kwargs), data, p, data.path)
            for p in split_parts(split)
        ]
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise UserError(f"dataset {data.path!r} (config {data.config_name}, split {split!r}): {exc}") from None
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_disk(data: DataConfig, split: str) -> Dataset | IterableDataset:
    path = Path(data.path)
    if not path.exists():
        raise UserError(f"{path}: saved dataset not found")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise UserError(f"{path}: not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(loaded, DatasetDict):
        parts = []
        for part in split_parts(split):
            if part not in loaded:
                raise UserError(f"{path}: no split {part!r} (available: {', '.join(loaded)})")
            parts.append(_standardize(loaded[part], data, part, str(path)))
        ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    else:  # a single saved Dataset is used whatever the split
        ds = _standardize(loaded, data, split_parts(split)[0], str(path))
    return ds.to_iterable_dataset() if data.streaming else ds


def load_examples(data: DataConfig, split: str, report: DataReport | None = None) -> Dataset | IterableDataset:
    """Examples of `split` (an expression such as "train+validation") with columns id, audio, text.

    Raises UserError naming the path when the source cannot be read or nothing usable is left.
    """
    report = report if report is not None else DataReport()
    if not data.path:
        raise ConfigError("data.path is empty: give a Hub dataset id, an audio folder, a manifest or a saved dataset")
    if data.source in ("folder", "manifest"):
        root = Path(data.path).expanduser()
        if data.source == "folder" and not root.is_dir():
            raise UserError(f"{root}: audio folder not found")
        rows: list[dict[str, Any]] = []
        report.register(split)  # reported even if every row is skipped
        known = set(STANDARD_SPLITS) | {p for expr in (data.train_split, data.eval_split, split) if expr
                                        for p in split_parts(expr)}
        for part in split_parts(split):
            if data.source == "folder":
                rows += _folder_part(root, part, data.text_column, split, report, known)
            else:
                rows += _manifest_part(root, part, split, report)
        rows = _drop_duplicates(rows, split, report)
        if not rows:
            reason = report.main_reason(split) or "no rows"
            raise UserError(f"{root}: no usable examples in split {split!r} (main problem: {reason}; {report.summary_line()})")
        if any(row["segments"] for row in rows):  # local metadata is small: never streamed
            return Dataset.from_list(rows, features=TIMED_FEATURES)
        return Dataset.from_list([{k: v for k, v in row.items() if k != "segments"} for row in rows],
                                 features=LOCAL_FEATURES)
    if data.source == "hub":
        ds = _load_hub(data, split)
    elif data.source == "disk":
        ds = _load_disk(data, split)
    else:
        raise ConfigError(f"data.source: unknown kind {data.source!r}; accepted: hub, folder, manifest, disk")
    if isinstance(ds, Dataset):
        report.add_seen(split, len(ds))
        ds = _dedupe_dataset(ds, split, report)
        if len(ds) == 0:
            raise UserError(f"{data.path}: split {split!r} has no examples")
    return ds
