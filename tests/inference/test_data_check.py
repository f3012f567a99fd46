"""`whispertune data check` (issue 17 item 2): the command's outputs and exit codes on real audio files, and
the CER check with real models: the embedded tiny.en on espeak-ng speech with one wrong transcript, and a
model that knows nothing of the data (a tiny random Whisper), whose CER flags are reported but not trusted."""

from __future__ import annotations

import json
import subprocess

import matplotlib.image
import pytest

from tests.helpers import RATE_CORPUS, make_adapter, write_rate_corpus
from whispertune.cli import main
from whispertune.config import load_config
from whispertune.inference.data_check import check_data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_rate_corpus(tmp_path_factory.mktemp("check") / "corpus")


def _args(corpus, tiny_whisper_dir, out) -> list[str]:
    return ["data", "check", "--data.path", str(corpus), "--data.cache_dir", str(corpus.parent / "cache"),
            "--model.name_or_path", str(tiny_whisper_dir), "--model.language", "en", "--out", str(out)]


def test_check_writes_report_rows_and_plot(corpus, tiny_whisper_dir, tmp_path, capsys):
    assert main(_args(corpus, tiny_whisper_dir, tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "data triage (train): 2 of 6 rows flagged (1 too_fast, 1 too_slow); kept, not dropped" in printed
    assert "too_fast" in printed and "this transcript is far too long" in printed  # the tables
    report = json.loads((tmp_path / "out" / "data_report.json").read_text(encoding="utf-8"))
    train = report["splits"]["train"]
    assert (train["kept"], train["skipped_total"]) == (6, 0)
    assert train["flagged"]["by_reason"] == {"too_fast": 1, "too_slow": 1}
    rows = [json.loads(line) for line in (tmp_path / "out" / "flagged.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["reason"], r["duration"]) for r in rows] == [("fast", "too_fast", 0.5), ("slow", "too_slow", 20.0)]
    assert rows[1]["file"] == str(corpus / "slow.wav") and rows[1]["text"] == RATE_CORPUS["slow"][1]
    image = matplotlib.image.imread(tmp_path / "out" / "chars_per_second.png")
    assert image.shape[:2] == (400, 700)
    assert not list((tmp_path / "out").glob(".*tmp*"))  # written atomically: no temporary left


def test_drop_flagged_previews_the_split_without_them(corpus, tiny_whisper_dir, tmp_path, capsys):
    assert main(_args(corpus, tiny_whisper_dir, tmp_path) + ["--drop-flagged"]) == 0
    train = json.loads((tmp_path / "data_report.json").read_text(encoding="utf-8"))["splits"]["train"]
    assert (train["seen"], train["kept"], train["skipped"]) == (6, 4, {"too_fast": 1, "too_slow": 1})
    assert "2 dropped" in capsys.readouterr().out
    assert (corpus / "slow.wav").is_file() and len((corpus / "metadata.csv").read_text().splitlines()) == 7  # untouched


def _error_line(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whispertune: error: "), lines
    return lines[0]


def test_bad_options_exit_2_with_one_line(corpus, tiny_whisper_dir, tmp_path, capsys):
    args = _args(corpus, tiny_whisper_dir, tmp_path)
    assert "needs a model: add --model M and/or --adapter DIR" in _error_line(args + ["--max-cer", "50"], capsys)
    assert "argument --max-cer: got '-5', expected a number in (0, inf]" in _error_line(
        args + ["--model", "x", "--max-cer", "-5"], capsys)
    assert "data.max_chars_per_second: got 0.5" in _error_line(args + ["--data.max_chars_per_second", "0.5"], capsys)
    assert "no data to check: give --config" in _error_line(["data", "check", "--out", str(tmp_path)], capsys)
    assert "the following arguments are required: ACTION" in _error_line(["data"], capsys)
    assert "invalid choice: 'fix'" in _error_line(["data", "fix"], capsys)


@pytest.mark.parametrize("given", ["model", "adapter"])
def test_a_model_that_knows_nothing_flags_everything_but_drops_nothing(given, corpus, tiny_whisper_dir, tmp_path):
    cfg = load_config(None, [
        f"data.path={corpus}", f"data.cache_dir={corpus.parent / 'cache'}", "model.language=en",
        "generation.max_new_tokens=8"])
    if given == "model":
        result = check_data(cfg, model=str(tiny_whisper_dir), drop_flagged=True, out_dir=tmp_path, progress=False)
    else:  # a random adapter on the tiny random base: its base and language come from its whispertune.json
        adapter = make_adapter(str(tiny_whisper_dir), tmp_path / "run", language="en")
        result = check_data(cfg, adapter=str(adapter), drop_flagged=True, out_dir=tmp_path, progress=False)
        assert result.report.flags["train"].settings["adapter"] == str(adapter)
    assert result.cer_trusted is False
    flagged = result.report.to_dict()["splits"]["train"]["flagged"]
    assert flagged["by_reason"]["high_cer"] == 6 and "the model does not know this data" in flagged["note"]
    train = result.report.to_dict()["splits"]["train"]
    assert train["skipped"] == {"too_fast": 1, "too_slow": 1} and train["kept"] == 4  # only the rate flags dropped
    assert flagged["rows"] == 6 and "6 of 6 rows are above max_cer 75" in result.report.flag_line("train")


ENGLISH = ["The old lighthouse stood alone on the rocky island.", "My brother plays the guitar every Sunday morning.",
           "Please close the window before it starts to rain.", "The train to the city leaves at seven o'clock.",
           "We watched the stars from the top of the hill."]
WRONG = "Bananas are rich in potassium and taste sweet."


@pytest.mark.slow  # 15 s on 2 CPU cores
@pytest.mark.embedded
@pytest.mark.synth
def test_tiny_en_flags_the_wrong_transcript(tmp_path):
    lines = ["file_name,text,id"]
    for i, text in enumerate(ENGLISH):
        subprocess.run(["espeak-ng", "-w", str(tmp_path / f"s{i}.wav"), text], check=True)
        lines.append(f'''s{i}.wav,"{WRONG if i == 2 else text}",s{i}''')
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(None, [f"data.path={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", "model.language=null",
                             "model.name_or_path=embedded:tiny.en"])
    result = check_data(cfg, model="embedded:tiny.en", device="cpu", out_dir=tmp_path / "out", progress=False)
    assert result.cer_trusted is True
    assert [(f.id, f.reason) for f in result.flags] == [("s2", "high_cer")]
    flagged = result.report.to_dict()["splits"]["train"]["flagged"]
    assert flagged["max_cer"] == 75.0 and flagged["model"] == "embedded:tiny.en" and "note" not in flagged
    assert result.flags[0].value > 75 and "model said" in result.flags[0].detail
    assert result.report.kept("train") == 5  # reported, not dropped
