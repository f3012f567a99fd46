"""A transcript as the body of OpenAI's `/v1/audio/transcriptions` response, in each `response_format`.

json: {"text"}; text, srt, vtt: plain text bodies (the subtitle writers of inference/subtitles.py);
verbose_json: task, language (its name, as OpenAI writes it), duration, text and segments. Segments carry
id, seek, start, end (Whisper's timestamp tokens: these formats are decoded with them), text and the
request's temperature; OpenAI's avg_logprob, compression_ratio, no_speech_prob and
tokens are left out: this server does not compute them, and invented values would mislead.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..inference.subtitles import render
from ..inference.transcribe import Transcript
from ..languages import resolve_language

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TIMED_FORMATS = ("srt", "vtt", "verbose_json")  # decoded with timestamp tokens
_TEXT_FORMATS = {"text": ("txt", "text/plain"), "srt": ("srt", "application/x-subrip"), "vtt": ("vtt", "text/vtt")}


def verbose_body(transcript: Transcript, task: str, temperature: float = 0.0) -> dict[str, Any]:
    resolved = resolve_language(transcript.language) if transcript.language else None
    return {
        "task": task,
        "language": resolved[0] if resolved else None,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [
            {"id": i, "seek": round(s.start * 100), "start": round(s.start, 3), "end": round(s.end, 3),
             "text": s.text, "temperature": temperature}
            for i, s in enumerate(transcript.segments)
        ],
    }


def transcription_response(transcript: Transcript, response_format: str, task: str = "transcribe",
                           temperature: float = 0.0) -> Response:
    """The HTTP response for `transcript` in `response_format` (one of RESPONSE_FORMATS, checked by the caller)."""
    if response_format == "json":
        return JSONResponse({"text": transcript.text})
    if response_format == "verbose_json":
        return JSONResponse(verbose_body(transcript, task, temperature))
    fmt, media_type = _TEXT_FORMATS[response_format]
    return PlainTextResponse(render(transcript, fmt), media_type=media_type)
