"""`whispertune serve` through the official `openai` client against a real server on localhost (embedded:tiny.en
on the CPU, espeak-ng speech): every response format, the errors in OpenAI's shape, and concurrent requests
batched into shared model calls with each answer belonging to its own request."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

pytestmark = [pytest.mark.embedded, pytest.mark.synth]

MODEL = "embedded:tiny.en"


def test_response_formats(client, speech_clips, nearest):
    clip = speech_clips[0]
    requests = {"json": {}, "text": {"model": "whisper-1"}, "verbose_json": {"language": "en"}, "srt": {}, "vtt": {}}

    def ask(fmt: str):
        options = {"model": MODEL, **requests[fmt]}
        return client.audio.transcriptions.create(file=clip.open("rb"), response_format=fmt, **options)

    with ThreadPoolExecutor(len(requests)) as pool:  # sent together: one call without timestamps, one with
        answers = dict(zip(requests, pool.map(ask, requests)))
    text = answers["json"].text
    assert nearest(text) == 0
    assert answers["text"] == text + "\n"  # the same transcript, whichever name of the model is asked for
    # verbose_json, srt and vtt are decoded with timestamp tokens (batched together, apart from json and text)
    verbose, duration = answers["verbose_json"], sf.info(str(clip)).duration
    assert nearest(verbose.text) == 0 and verbose.language == "english" and verbose.task == "transcribe"
    assert verbose.duration == pytest.approx(duration, abs=0.01)
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments))) and verbose.segments
    assert " ".join(s.text for s in verbose.segments) == verbose.text
    # the model's own times: speech starts near 0 and ends before the clip's trailing silence ends
    assert 0.0 <= verbose.segments[0].start < 0.3 and verbose.segments[-1].end <= duration + 0.01
    assert all(s.temperature == 0.0 and s.start < s.end for s in verbose.segments)
    # subtitles: sentence-length cues (inference/subtitles.py) that together say the transcript, at the model's times
    cues = list(srt.parse(answers["srt"]))
    assert " ".join(" ".join(c.content.split()) for c in cues) == " ".join(verbose.text.split())
    assert cues[0].start.total_seconds() == pytest.approx(verbose.segments[0].start, abs=1e-3)
    assert cues[-1].end.total_seconds() == pytest.approx(verbose.segments[-1].end, abs=1e-3)
    captions = webvtt.from_string(answers["vtt"]).captions
    assert [" ".join(c.text.split()) for c in captions] == [" ".join(c.content.split()) for c in cues]
    assert [(c.start, c.end) for c in captions] == [
        tuple(srt.timedelta_to_srt_timestamp(t).replace(",", ".") for t in (c.start, c.end)) for c in cues]


def _error(call) -> tuple[int, dict]:
    import openai

    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.status_code, caught.value.body


def test_errors_in_openai_shape(client, speech_clips, tmp_path):
    clip = speech_clips[1]
    create = client.audio.transcriptions.create
    status, body = _error(lambda: create(model="whisper-9", file=clip.open("rb")))
    assert status == 404 and body["code"] == "model_not_found" and body["param"] == "model"
    status, body = _error(lambda: create(model=MODEL, file=clip.open("rb"), response_format="docx"))
    assert status == 400 and body["param"] == "response_format" and "json, text, srt, vtt" in body["message"]
    status, body = _error(lambda: create(model=MODEL, file=("notes.txt", b"this is not audio\n" * 50)))
    assert status == 400 and body["code"] == "invalid_audio" and body["message"].startswith("notes.txt: ")
    status, body = _error(lambda: create(model=MODEL, file=("empty.wav", b"")))
    assert status == 400 and body["code"] == "invalid_audio"
    status, body = _error(lambda: create(model=MODEL, file=clip.open("rb"), language="klingon"))
    assert status == 400 and body["param"] == "language" and "unknown Whisper language" in body["message"]
    status, body = _error(lambda: create(model=MODEL, file=clip.open("rb"), language="fr"))
    assert status == 400 and "English-only" in body["message"]
    for temperature in (1.5, -0.1):
        status, body = _error(lambda t=temperature: create(model=MODEL, file=clip.open("rb"), temperature=t))
        assert status == 400 and body["param"] == "temperature" and "[0, 1]" in body["message"]
        assert body["type"] == "invalid_request_error" and body["code"] == "invalid_value"
    # 25 s of audio, over the server's 20 s limit (a 16 kHz 8-bit file stays under its 1 MB limit)
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.tile(sf.read(clip, dtype="float32")[0], 12)[: 25 * 22050], 22050, subtype="PCM_U8")
    status, body = _error(lambda: create(model=MODEL, file=long_clip.open("rb")))
    assert status == 400 and body["code"] == "audio_too_long" and "20 s" in body["message"]
    # over the 1 MB limit: just over (counted while read) and far over (refused from its Content-Length)
    for size in (2**20 + 1000, 5 * 2**20):
        status, body = _error(lambda size=size: create(model=MODEL, file=("big.wav", b"\0" * size)))
        assert status == 413 and body["code"] == "file_too_large" and "--max-file-mb" in body["message"]


def test_prompt_conditions_decoding_and_is_not_echoed(client, speech_clips):
    """tiny.en hears espeak-ng's "lighthouse" as "light has"; a prompt that spells the word makes it write
    "lighthouse", and the prompt itself is not part of the transcript."""
    clip = speech_clips[0]  # "The old lighthouse stood alone on the rocky island."
    create = client.audio.transcriptions.create
    plain = create(model=MODEL, file=clip.open("rb")).text
    prompted = create(model=MODEL, file=clip.open("rb"), prompt="The lighthouse keeper's diary.").text
    print(repr(plain), repr(prompted))
    assert "lighthouse" not in plain.lower() and "lighthouse" in prompted.lower()
    assert "keeper" not in prompted.lower() and "diary" not in prompted.lower()
    assert prompted.lower().startswith("the old lighthouse")
    # subtitles with a prompt: decoded with timestamps, still without the prompt
    cues = list(srt.parse(create(model=MODEL, file=clip.open("rb"), prompt="The lighthouse keeper's diary.",
                                 response_format="srt")))
    assert cues and "diary" not in " ".join(c.content for c in cues).lower()


def test_sampling_with_a_seed_is_reproducible(client, speech_clips, nearest):
    clip = speech_clips[2]
    create = client.audio.transcriptions.create

    def sample(seed: int):
        return create(model=MODEL, file=clip.open("rb"), temperature=0.8, response_format="verbose_json",
                      extra_body={"seed": seed})

    with ThreadPoolExecutor(2) as pool:  # sent together: each sampled request still gets its own call and draws
        first, again = pool.map(sample, (7, 7))
    assert first.text == again.text and nearest(first.text) == 2
    assert [(s.start, s.end) for s in first.segments] == [(s.start, s.end) for s in again.segments]
    assert all(s.temperature == 0.8 for s in first.segments)
    status, body = _error(lambda: create(model=MODEL, file=clip.open("rb"), temperature=0.8, extra_body={"seed": "x"}))
    assert status == 400 and body["param"] == "seed"


def test_concurrent_requests_are_batched_and_not_mixed_up(client, tiny_en_server, speech_clips, nearest):
    before = json.load(urllib.request.urlopen(f"{tiny_en_server[0]}/health"))

    def ask(i: int) -> tuple[int, str]:
        return i, client.audio.transcriptions.create(model=MODEL, file=speech_clips[i].open("rb")).text

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(len(speech_clips))))
    assert len(answers) == len(speech_clips) == 16
    assert [nearest(text) for _, text in answers] == [i for i, _ in answers], answers
    after = json.load(urllib.request.urlopen(f"{tiny_en_server[0]}/health"))
    assert after["requests"] - before["requests"] == 16
    assert after["model_calls"] - before["model_calls"] < 16 and after["largest_call"] > 1  # batched


def test_health_models_and_page(tiny_en_server, client):
    health = json.load(urllib.request.urlopen(f"{tiny_en_server[0]}/health"))
    assert health["status"] == "ok" and health["model"] == MODEL and health["max_file_bytes"] == 2**20
    assert [m.id for m in client.models.list()] == [MODEL, "whisper-1"]
    page = urllib.request.urlopen(f"{tiny_en_server[0]}/").read().decode()
    assert "/v1/audio/transcriptions" in page and "MediaRecorder" in page
