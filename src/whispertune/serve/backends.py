"""What the server transcribes with: a base, adapter or merged model through `load_for_inference`, or a
CTranslate2 export through faster-whisper (only when faster-whisper is installed; it is not a dependency).

A backend takes 16 kHz mono files and one request's `RequestDecoding` (language code, prompt, temperature and
seed, timestamps) and returns one `Transcript` per file; the batcher calls it from a single thread.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UserError
from ..inference.generation import Loaded, load_for_inference
from ..inference.options import DecodingOptions, LoadOptions
from ..inference.transcribe import Segment, Transcript, transcribe


@dataclass(frozen=True)
class RequestDecoding:
    """How a request is decoded; requests share a model call only when these are equal."""

    language: str | None = None  # None: the model's own, else detected per clip
    prompt: str | None = None  # conditions decoding (Whisper's previous-text prompt), never in the transcript
    temperature: float = 0.0  # 0: greedy; above 0: sampled with `seed`
    seed: int = 0
    timestamps: bool = False  # segments timed by Whisper's timestamp tokens (srt, vtt, verbose_json)


class TransformersBackend:
    def __init__(self, model: str | None, adapter: str | None, load: LoadOptions, batch_size: int):
        self.loaded = load_for_inference(model, adapter, load)
        self.decoding = DecodingOptions(batch_size=batch_size)
        self.multilingual = bool(getattr(self.loaded.model.generation_config, "lang_to_id", None))
        self.device = str(self.loaded.info.get("device"))

    def transcribe(self, paths: list[Path], request: RequestDecoding) -> list[Transcript]:
        loaded = self.loaded
        if request.language is not None:  # the request's language for this call; weights and processor are shared
            loaded = Loaded(loaded.model, loaded.processor, {**loaded.info, "language": request.language})
        decoding = replace(self.decoding, prompt=request.prompt, temperature=request.temperature, seed=request.seed,
                           timestamps=request.timestamps)
        transcripts = transcribe(paths, loaded=loaded, decoding=decoding, progress=False)
        for t in transcripts:
            if t.language is None and not self.multilingual:  # English-only models have no language token
                t.language = "en"
        return transcripts


def is_ct2_export(path: str) -> bool:
    """A CTranslate2 model directory (model.bin, no transformers config.json with weights)."""
    folder = Path(path)
    return (folder / "model.bin").is_file() and not (folder / "model.safetensors").is_file()


class FasterWhisperBackend:
    """A CTranslate2 export transcribed by faster-whisper itself (its own front end and timestamps; prompt and
    temperature are faster-whisper's `initial_prompt` and `temperature`), one file at a time: requests are queued
    like the others, but faster-whisper decodes each file on its own. A sampled decode is not reproducible here:
    CTranslate2 draws from a generator per worker thread, seeded once when the thread starts, so the request's
    seed cannot reach it."""

    def __init__(self, path: str, device: str | None):
        if importlib.util.find_spec("faster_whisper") is None:
            raise UserError(f"{path}: a CTranslate2 export is served through faster-whisper, which is not "
                            "installed; pip install faster-whisper, or serve the transformers model instead")
        from faster_whisper import WhisperModel

        self.device = "cuda" if (device or "").startswith("cuda") else "cpu" if device else "auto"
        self.model = WhisperModel(path, device=self.device, compute_type="default")
        self.multilingual = bool(self.model.model.is_multilingual)

    def transcribe(self, paths: list[Path], request: RequestDecoding) -> list[Transcript]:
        results = []
        for path in paths:
            segments, info = self.model.transcribe(str(path), language=request.language, beam_size=1,
                                                   temperature=request.temperature, initial_prompt=request.prompt)
            segs = [Segment(s.start, s.end, s.text.strip(), timed=True) for s in segments]
            results.append(Transcript(str(path), " ".join(s.text for s in segs), info.language, segs,
                                      duration=float(info.duration)))
        return results


def load_backend(model: str | None, adapter: str | None, load: LoadOptions, batch_size: int):
    if adapter is None and model is not None and is_ct2_export(model):
        return FasterWhisperBackend(model, load.device)
    return TransformersBackend(model, adapter, load, batch_size)
