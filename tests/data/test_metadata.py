"""The validating metadata reader: every row comes out unchanged, skipped with a reason, or the file is refused."""

from __future__ import annotations

import codecs

import pytest

from whispertune.data.metadata import read_rows
from whispertune.data.report import DataReport
from whispertune.errors import UserError

HEADER = "file_name,sentence,locale\n"


def _read(tmp_path, name: str, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    report = DataReport()
    rows = read_rows(path, "train", report)
    return rows, report


def test_plain_csv_rows_come_out_unchanged_with_line_numbers(tmp_path):
    rows, report = _read(tmp_path, "metadata.csv", HEADER + 'a.wav,"एक, दोन",mr\n\nb.wav,"he said ""hi""",mr\n')
    assert rows == [(2, {"file_name": "a.wav", "sentence": "एक, दोन", "locale": "mr"}),
                    (4, {"file_name": "b.wav", "sentence": 'he said "hi"', "locale": "mr"})]
    assert report.seen("train") == 0 and not report.skipped("train")  # the caller counts the rows it keeps


def test_unquoted_comma_and_missing_field_are_skipped_not_cut(tmp_path):
    rows, report = _read(tmp_path, "metadata.csv", HEADER + "a.wav,तो, शाळेत गेला,mr\nb.wav,ok\nc.wav,fine,mr\n")
    assert [r[1]["file_name"] for r in rows] == ["c.wav"]
    assert report.skipped("train") == {"csv_extra_fields": 1, "csv_missing_fields": 1}
    details = {e["reason"]: e for e in report.to_dict()["skipped_examples"]}
    assert "line 2: 4 fields for 3 columns" in details["csv_extra_fields"]["detail"]
    assert details["csv_missing_fields"]["id"] == "metadata.csv:3"


def test_unterminated_quote_is_an_error_naming_the_line(tmp_path):
    with pytest.raises(UserError, match=r"metadata\.csv:3: a quote opened on this line is never closed"):
        _read(tmp_path, "metadata.csv", HEADER + 'a.wav,ok,mr\nb.wav,"broken,mr\nc.wav,x,mr\nd.wav,y,mr\n')


def test_quote_that_swallows_rows_is_refused_as_ambiguous(tmp_path):
    content = HEADER + 'a.wav,"opened,mr\nb.wav,x,mr\nc.wav,closed" later,mr\n'
    with pytest.raises(UserError, match=r"metadata\.csv:2: a quoted field runs over 3 lines"):
        _read(tmp_path, "metadata.csv", content)


def test_quoted_line_break_inside_one_transcript_stays_legal(tmp_path):
    rows, _ = _read(tmp_path, "metadata.csv", HEADER + 'a.wav,"first line\nsecond line",mr\nb.wav,x,mr\n')
    assert rows[0] == (2, {"file_name": "a.wav", "sentence": "first line\nsecond line", "locale": "mr"})
    assert rows[1][0] == 4


def test_text_after_a_closing_quote_is_skipped(tmp_path):
    rows, report = _read(tmp_path, "metadata.csv", HEADER + 'a.wav,"b"x,mr\nc.wav,y,mr\n')
    assert [r[1]["file_name"] for r in rows] == ["c.wav"]
    assert report.skipped("train") == {"csv_bad_quoting": 1}


def test_huge_field_is_read_whole(tmp_path):
    text = "अ" * 200_000
    rows, _ = _read(tmp_path, "metadata.csv", HEADER + f"a.wav,{text},mr\n")
    assert rows[0][1]["sentence"] == text


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
                                          ("utf-8", codecs.BOM_UTF8), ("utf-32-le", codecs.BOM_UTF32_LE)])
def test_byte_order_marks_decide_the_encoding(tmp_path, encoding, bom):
    rows, _ = _read(tmp_path, "metadata.csv", bom + (HEADER + "a.wav,तो शाळेत गेला,mr\n").encode(encoding))
    assert rows == [(2, {"file_name": "a.wav", "sentence": "तो शाळेत गेला", "locale": "mr"})]


def test_utf16_without_bom_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"metadata\.csv: NUL bytes .*UTF-16 without a byte-order mark"):
        _read(tmp_path, "metadata.csv", (HEADER + "a.wav,x,mr\n").encode("utf-16-le"))


def test_tsv_and_duplicate_header(tmp_path):
    rows, _ = _read(tmp_path, "metadata.tsv", "file_name\tsentence\na.wav\tएक, दोन\n")
    assert rows == [(2, {"file_name": "a.wav", "sentence": "एक, दोन"})]
    with pytest.raises(UserError, match=r"metadata\.csv:1: duplicate column names"):
        _read(tmp_path, "metadata.csv", "file_name,sentence,sentence\na,b,c\n")


def test_jsonl_refuses_non_objects_and_nan(tmp_path):
    content = b'{"audio_filepath": "a.wav", "text": "x"}\n[1, 2]\n{"audio_filepath": "b.wav", "text": NaN}\n\xff\n{bad\n'
    rows, report = _read(tmp_path, "train.jsonl", content)
    assert rows == [(1, {"audio_filepath": "a.wav", "text": "x"})]
    assert report.skipped("train") == {"bad_manifest_line": 3, "invalid_utf8": 1}
    assert report.seen("train") == 4
