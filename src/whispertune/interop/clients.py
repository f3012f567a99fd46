"""The exported models as their own users run them: faster-whisper for CTranslate2, pywhispercpp for GGML.

Each client reads the audio file itself (its own decoder, resampler and log-Mel front end) and decodes
greedily (beam 1, temperature 0, no fallback, no VAD, no conditioning on earlier text), as whispertune does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Client:
    name: str  # as the model card names it
    transcribe: Callable[[str], str]  # audio file -> text


def faster_whisper_client(ct2_dir: str | Path, language: str | None, task: str, device: str = "cpu") -> Client:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device=device, compute_type="default")

    def transcribe(path: str) -> str:
        segments, _ = model.transcribe(path, language=language, task=task, beam_size=1, temperature=0.0,
                                       without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
        return "".join(s.text for s in segments).strip()

    return Client("faster-whisper", transcribe)


def whispercpp_client(ggml_file: str | Path, language: str | None, task: str) -> Client:
    from pywhispercpp.model import Model

    model = Model(str(ggml_file), language=language or "en", translate=task == "translate", greedy={"best_of": 1},
                  temperature=0.0, temperature_inc=0.0, no_context=True, no_timestamps=True, print_progress=False,
                  print_realtime=False, n_threads=max(1, min(4, os.cpu_count() or 1)), redirect_whispercpp_logs_to=None)

    def transcribe(path: str) -> str:
        return "".join(s.text for s in model.transcribe(path)).strip()

    return Client("whisper.cpp", transcribe)
