"""`train` runs the speaking-rate triage on its training split (issue 17 item 2): the flags are in the run's
data report and in one printed line, and `data.drop_flagged` trains without exactly those rows."""

from __future__ import annotations

import json

import pytest

from tests.helpers import train_overrides, write_rate_corpus
from whispertune.config import load_config
from whispertune.training.trainer import train


@pytest.mark.parametrize("drop", [False, True])
def test_train_records_flags_and_drops_them_only_when_asked(drop, tiny_whisper_dir, tmp_path, capsys):
    corpus = write_rate_corpus(tmp_path / "corpus")
    cfg = load_config(None, train_overrides(tiny_whisper_dir, corpus, tmp_path / "run", "none", 1)
                      + ["train.save_strategy=no", f"data.drop_flagged={str(drop).lower()}"])
    cfg.data.eval_split = None
    train(cfg)
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "data_report.json").read_text(encoding="utf-8"))
    split = report["splits"]["train"]
    assert split["flagged"]["by_reason"] == {"too_fast": 1, "too_slow": 1}
    if drop:
        assert (split["kept"], split["skipped"]) == (4, {"too_fast": 1, "too_slow": 1})
        assert sorted(e["id"] for e in report["skipped_examples"]) == ["fast", "slow"]
        assert "data triage (train): 2 of 6 rows flagged (1 too_fast, 1 too_slow); 2 dropped" in printed
    else:
        assert (split["kept"], split["skipped"], report["skipped_examples"]) == (6, {}, [])
        assert "data triage (train): 2 of 6 rows flagged (1 too_fast, 1 too_slow); kept, not dropped" in printed
