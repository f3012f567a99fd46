"""`whispertune serve`'s numeric flags are range-checked up front, in one line naming the flag (before any model
or web framework is loaded: `--model` names a directory that does not exist)."""

from __future__ import annotations

import pytest

from whispertune.cli import main

CASES = [
    (["--port", "0"], "argument --port: got '0', expected an integer in [1, 65535]"),
    (["--port", "70000"], "argument --port: got '70000'"),
    (["--batch-size", "0"], "argument --batch-size: got '0', expected an integer in [1, 4096]"),
    (["--batch-wait-ms", "-1"], "argument --batch-wait-ms: got '-1', expected a number in [0.0, 1000.0]"),
    (["--batch-wait-ms", "nan"], "argument --batch-wait-ms: got 'nan'"),
    (["--max-file-mb", "0"], "argument --max-file-mb: got '0', expected a number in (0.0, 1024.0]"),
    (["--max-file-mb", "5000"], "argument --max-file-mb: got '5000'"),
    (["--max-seconds", "0"], "argument --max-seconds: got '0', expected a number in (0.0, 14400.0]"),
    (["--max-seconds", "inf"], "argument --max-seconds: got 'inf'"),
]


@pytest.mark.parametrize(("flags", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_out_of_range_flags_are_refused(flags, message, capsys, tmp_path):
    code = main(["serve", "--model", str(tmp_path / "missing"), *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("whispertune:")]
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_a_missing_model_is_one_line(capsys, tmp_path):
    pytest.importorskip("uvicorn")
    code = main(["serve", "--model", str(tmp_path / "missing"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("whispertune: error: model ") and "no such directory" in err[-1]
