"""The FastAPI application: OpenAI's `POST /v1/audio/transcriptions`, `GET /v1/models`, `GET /health` and a
web page at `/` to upload or record audio.

Every error is a 4xx with OpenAI's error body `{"error": {"message", "type", "param", "code"}}`, which the
official `openai` client turns into its BadRequestError / NotFoundError / APIStatusError: an upload over
`max_file_bytes` is 413 (refused from its Content-Length before it is read when the header says so), audio
longer than `max_seconds`, undecodable or shorter than 0.1 s is 400, a temperature outside [0, 1] is 400, an
unknown model 404.

`prompt` conditions decoding as Whisper's previous text; `temperature` above 0 samples, seeded by the
form field `seed` (an extension: OpenAI's API has none; the openai client sends it with
`extra_body={"seed": N}`), else by a fresh random seed. srt, vtt and verbose_json are decoded with timestamp
tokens, so their segments and cues are timed by the model.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import soundfile as sf
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from ..data.audio import SAMPLE_RATE, audio_problem, load_audio
from ..errors import AudioError, ConfigError
from ..languages import language_code
from .backends import RequestDecoding
from .batcher import Batcher
from .responses import RESPONSE_FORMATS, TIMED_FORMATS, transcription_response

MULTIPART_SLACK = 1 << 20  # form fields and boundaries on top of the file, when judging a Content-Length
log = logging.getLogger("whispertune.serve")


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 25 << 20  # OpenAI's own limit: 25 MB
    max_seconds: float = 600.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def decoded_upload(data: bytes, filename: str, limits: Limits, out: Path) -> Path:
    """The upload decoded to a 16 kHz mono float WAV at `out` (the one format the model path reads), or ApiError."""
    try:
        audio = load_audio({"bytes": data, "path": filename})
    except AudioError as exc:
        # the decoders' own words name a temporary buffer, not the client's file: the reason is what helps
        raise ApiError(400, f"{filename}: not decodable audio ({exc.reason.replace('_', ' ')}); send an audio "
                       "file (wav, flac, mp3, ogg, webm, m4a, ...)", "file", "invalid_audio") from None
    problem = audio_problem(audio, SAMPLE_RATE, max_seconds=limits.max_seconds)
    seconds = len(audio) / SAMPLE_RATE
    if problem == "too_long":
        raise ApiError(400, f"{filename}: {seconds:.1f} s of audio, more than this server's limit of "
                       f"{limits.max_seconds:g} s (whispertune serve --max-seconds)", "file", "audio_too_long")
    if problem in ("too_short", "non_finite"):
        what = f"{seconds:.2f} s long, shorter than 0.1 s" if problem == "too_short" else "not finite (NaN or inf)"
        raise ApiError(400, f"{filename}: audio is {what}", "file", "invalid_audio")
    sf.write(out, audio, SAMPLE_RATE, subtype="FLOAT")
    return out


def _check_request(model: str, names: tuple[str, ...], response_format: str, temperature: float,
                   language: str | None, multilingual: bool) -> str | None:
    """The request's language code, or ApiError for the first field this server cannot honour."""
    if model not in names:
        raise ApiError(404, f"model {model!r} is not served here; available: {', '.join(names)}", "model",
                       "model_not_found")
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format {response_format!r}: expected one of {', '.join(RESPONSE_FORMATS)}",
                       "response_format", "invalid_value")
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, f"temperature {temperature:g}: expected a number in [0, 1]", "temperature", "invalid_value")
    try:
        code = language_code(language)
    except ConfigError as exc:
        raise ApiError(400, str(exc), "language", "invalid_language") from None
    if code not in (None, "en") and not multilingual:
        raise ApiError(400, f"language {language!r}: the model {names[0]!r} is English-only", "language",
                       "unsupported_language")
    return code


def create_app(backend: Any, batcher: Batcher, names: tuple[str, ...], limits: Limits = Limits()) -> FastAPI:
    """The server for `backend` (see backends.py) whose requests go through `batcher`; `names`: the model names
    requests may ask for (the first is the one shown)."""
    app = FastAPI(title="whispertune", docs_url=None, redoc_url=None)
    page = resources.files("whispertune").joinpath("assets/serve_page.html").read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = str(first["loc"][-1]) if first.get("loc") else None
        return ApiError(400, f"{param}: {first['msg']}", param, "invalid_value").response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None).response()

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_file_bytes + MULTIPART_SLACK:
            return _too_large(int(length), limits).response()
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = batcher.stats
        return {"status": "ok", "model": names[0], "device": backend.device, "queued": batcher.pending(),
                "requests": stats.requests, "model_calls": stats.calls, "largest_call": stats.largest_call,
                "max_file_bytes": limits.max_file_bytes, "max_seconds": limits.max_seconds}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "whispertune"} for n in names]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form()] = 0.0,
        seed: Annotated[int | None, Form()] = None,
    ):
        code = _check_request(model, names, response_format, temperature, language, backend.multilingual)
        # greedy: the seed plays no part (0, so that such requests batch together); sampled without a seed: random
        seed = 0 if temperature == 0.0 else secrets.randbelow(2**31) if seed is None else seed
        request = RequestDecoding(code, prompt.strip() if prompt and prompt.strip() else None, temperature, seed,
                                  response_format in TIMED_FORMATS)
        data = await file.read(limits.max_file_bytes + 1)
        if len(data) > limits.max_file_bytes:
            raise _too_large(None, limits)
        filename = file.filename or "upload"
        with tempfile.TemporaryDirectory(prefix="whispertune-serve-") as tmp:
            path = await run_in_threadpool(decoded_upload, data, filename, limits, Path(tmp) / "audio.wav")
            transcript = await asyncio.wrap_future(batcher.submit(path, request, alone=temperature > 0.0))
        if transcript.error:
            raise ApiError(500, f"{filename}: {transcript.error}", "file", "transcription_failed", "server_error")
        if request.timestamps and transcript.untimed_windows:
            log.warning("%s: %d window(s) without valid timestamp tokens; their segment and cue times are "
                        "estimated", filename, transcript.untimed_windows)
        return transcription_response(transcript, response_format, temperature=temperature)

    return app


def _too_large(size: int | None, limits: Limits) -> ApiError:
    """413 for a request body of `size` bytes (its Content-Length), or (None) a file found over the limit while
    read."""
    what = f"a request of {size} bytes" if size is not None else f"more than {limits.max_file_bytes} bytes"
    return ApiError(413, f"file: {what}, over this server's limit of {limits.max_file_bytes} bytes "
                    "(whispertune serve --max-file-mb)", "file", "file_too_large")
