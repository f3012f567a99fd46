"""One validating reader for every local metadata format: metadata.csv / .tsv, metadata.jsonl, JSONL manifests.

Every row that enters comes out either unchanged, as `(line number, {column: value})`, or counted in the
`DataReport` under a reason; a file that cannot be read unambiguously is a `UserError` naming file and line.
What it guards against (each was a silent change or a crash before):
- encodings: a UTF-8 BOM is dropped; UTF-16/32 with a BOM are decoded as such; UTF-16 without a BOM (NUL
  bytes in the text) is an error, since no guess is safe; a line that is not UTF-8 is skipped (`invalid_utf8`);
- CSV fields: a row with more fields than the header (an unquoted comma in a transcript) or fewer is skipped
  (`csv_extra_fields` / `csv_missing_fields`) instead of being cut by `zip`; fields of any length are read
  (the csv module's 128 KiB limit raised);
- quotes: a quoted field that runs over several physical lines and swallows text that looks like whole rows
  (an unterminated quote) is an error naming the line where it began; a quote still open at the end of the
  file too. A quoted line break inside one transcript that reads as a transcript stays legal;
- JSON lines: a line that is not a JSON object is skipped (`bad_manifest_line`); so are NaN/Infinity literals,
  which Python's json accepts, and a key given twice, of which it silently keeps the last.
Column values are checked by the caller (`sources`): which columns a format needs differs.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .report import DataReport

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long transcript is a data problem for `features`, not a crash

Row = tuple[int, dict[str, Any]]
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _lines(path: Path, split: str, report: DataReport) -> list[tuple[int, str]]:
    """(line number, text with its line end) of every decodable line of `path`."""
    raw = path.read_bytes()
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), None)
    if encoding is not None and encoding != "utf-8-sig":
        try:
            return list(enumerate(raw.decode(encoding).splitlines(keepends=True), start=1))
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not valid {encoding} despite its byte-order mark ({exc}); re-save it as UTF-8") from None
    if b"\x00" in raw[:4096]:
        raise UserError(f"{path}: NUL bytes in a text file (UTF-16 without a byte-order mark?); re-save it as UTF-8")
    out = []
    for number, line in enumerate(raw.splitlines(keepends=True), start=1):
        try:
            out.append((number, line.decode("utf-8-sig" if number == 1 else "utf-8")))
        except UnicodeDecodeError as exc:
            report.add_seen(split)
            report.skip(split, f"{path.name}:{number}", str(path), "invalid_utf8",
                        f"line {number}: not UTF-8 ({exc}); re-save the file as UTF-8")
    return out


def _csv_rows(path: Path, lines: list[tuple[int, str]], delimiter: str, split: str, report: DataReport) -> list[Row]:
    if not lines:
        raise UserError(f"{path}: empty metadata file (expected a header row)")
    header = next(csv.reader([lines[0][1]], delimiter=delimiter))
    if len(set(header)) != len(header):
        raise UserError(f"{path}:1: duplicate column names in the header {header}; rename them")
    rows: list[Row] = []
    index = 1
    while index < len(lines):
        start, record = lines[index][0], lines[index][1]
        index += 1
        if not record.strip():
            continue
        # A record continues on the next physical line while a quote is open.
        try:
            values = _parse(record, delimiter)
            while values is None and index < len(lines):
                record += lines[index][1]
                index += 1
                values = _parse(record, delimiter)
        except csv.Error as exc:  # e.g. text right after a closing quote: `"b"x`
            _refuse_swallowed_rows(path, start, record, delimiter, len(header))
            report.add_seen(split)
            report.skip(split, f"{path.name}:{start}", str(path), "csv_bad_quoting",
                        f"line {start}: {exc} (quote the whole value and double the quotes inside it)")
            continue
        if values is None:
            raise UserError(f"{path}:{start}: a quote opened on this line is never closed; close it or remove it")
        _refuse_swallowed_rows(path, start, record, delimiter, len(header))
        where = f"{path.name}:{start}"
        if len(values) != len(header):
            report.add_seen(split)
            reason = "csv_extra_fields" if len(values) > len(header) else "csv_missing_fields"
            hint = "an unquoted delimiter inside a value? quote that value" if len(values) > len(header) else \
                "a value missing its column"
            report.skip(split, where, str(path), reason,
                        f"line {start}: {len(values)} fields for {len(header)} columns ({hint})")
            continue
        rows.append((start, dict(zip(header, values))))
    return rows


def _parse(record: str, delimiter: str) -> list[str] | None:
    """The fields of one CSV record, or None while a quoted field is still open (more lines needed)."""
    reader = csv.reader(io.StringIO(record), delimiter=delimiter, strict=True)
    try:
        values = next(reader, [])
        if next(reader, None) is not None:  # a closed quote followed by a line break: the record ended earlier
            return values
    except csv.Error as exc:
        if "unexpected end of data" in str(exc) or "newline inside string" in str(exc):
            return None
        raise
    return values


def _refuse_swallowed_rows(path: Path, start: int, record: str, delimiter: str, columns: int) -> None:
    """UserError when a record spans lines of which one has a whole row's delimiters: rows eaten by an open quote."""
    inner = record.rstrip("\n").split("\n")[1:]
    if columns > 1 and any(line.count(delimiter) >= columns - 1 for line in inner):
        raise UserError(f"{path}:{start}: a quoted field runs over {len(inner) + 1} lines and holds what look like "
                        f"whole rows (an unterminated quote?); fix the quotes from line {start}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json keeps the last of two equal keys silently; which transcript was meant is unknown."""
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise ValueError(f"the key {key!r} appears twice")
        row[key] = value
    return row


def _jsonl_rows(path: Path, lines: list[tuple[int, str]], split: str, report: DataReport) -> list[Row]:
    rows: list[Row] = []
    for number, text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicate_keys)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            row = exc
        if not isinstance(row, dict):
            report.add_seen(split)
            problem = f"{row}" if isinstance(row, Exception) else f"a JSON {type(row).__name__}, not an object"
            report.skip(split, f"{path.name}:{number}", str(path), "bad_manifest_line", f"line {number}: {problem}")
            continue
        rows.append((number, row))
    return rows


def read_rows(path: Path, split: str, report: DataReport) -> list[Row]:
    """Rows of a metadata.csv / metadata.tsv / metadata.jsonl / manifest file (see the module docstring).

    Skipped rows are counted (seen and skipped) in `report` under `split`; returned rows are not yet counted:
    the caller decides which of them belong to the split it reads.
    """
    lines = _lines(path, split, report)
    if path.suffix in (".csv", ".tsv"):
        return _csv_rows(path, lines, "," if path.suffix == ".csv" else "\t", split, report)
    return _jsonl_rows(path, lines, split, report)
