"""What the server transcribes with: a base, adapter or merged model through `load_for_inference`, or a
CTranslate2 export through faster-whisper (only when faster-whisper is installed; it is not a dependency).

A backend takes 16 kHz mono files and a language code (None: the model's own, else detected per clip) and
returns one `Transcript` per file; the batcher calls it from a single thread.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UserError
from ..inference.generation import Loaded, load_for_inference
from ..inference.options import DecodingOptions, LoadOptions
from ..inference.transcribe import Segment, Transcript, transcribe


class TransformersBackend:
    def __init__(self, model: str | None, adapter: str | None, load: LoadOptions, batch_size: int):
        self.loaded = load_for_inference(model, adapter, load)
        self.decoding = DecodingOptions(batch_size=batch_size)
        self.multilingual = bool(getattr(self.loaded.model.generation_config, "lang_to_id", None))
        self.device = str(self.loaded.info.get("device"))

    def transcribe(self, paths: list[Path], language: str | None) -> list[Transcript]:
        loaded = self.loaded
        if language is not None:  # the request's language for this call; weights and processor are shared
            loaded = Loaded(loaded.model, loaded.processor, {**loaded.info, "language": language})
        transcripts = transcribe(paths, loaded=loaded, decoding=self.decoding, progress=False)
        for t in transcripts:
            if t.language is None and not self.multilingual:  # English-only models have no language token
                t.language = "en"
        return transcripts


def is_ct2_export(path: str) -> bool:
    """A CTranslate2 model directory (model.bin, no transformers config.json with weights)."""
    folder = Path(path)
    return (folder / "model.bin").is_file() and not (folder / "model.safetensors").is_file()


class FasterWhisperBackend:
    """A CTranslate2 export transcribed by faster-whisper itself (its own front end, greedy), one file at a time:
    requests are queued like the others, but faster-whisper decodes each file on its own."""

    def __init__(self, path: str, device: str | None):
        if importlib.util.find_spec("faster_whisper") is None:
            raise UserError(f"{path}: a CTranslate2 export is served through faster-whisper, which is not "
                            "installed; pip install faster-whisper, or serve the transformers model instead")
        from faster_whisper import WhisperModel

        self.device = "cuda" if (device or "").startswith("cuda") else "cpu" if device else "auto"
        self.model = WhisperModel(path, device=self.device, compute_type="default")
        self.multilingual = bool(self.model.model.is_multilingual)

    def transcribe(self, paths: list[Path], language: str | None) -> list[Transcript]:
        results = []
        for path in paths:
            segments, info = self.model.transcribe(str(path), language=language, beam_size=1, temperature=0.0)
            segs = [Segment(s.start, s.end, s.text.strip()) for s in segments]
            results.append(Transcript(str(path), " ".join(s.text for s in segs), info.language, segs,
                                      duration=float(info.duration)))
        return results


def load_backend(model: str | None, adapter: str | None, load: LoadOptions, batch_size: int):
    if adapter is None and model is not None and is_ct2_export(model):
        return FasterWhisperBackend(model, load.device)
    return TransformersBackend(model, adapter, load, batch_size)
