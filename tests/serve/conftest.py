"""A real `whispertune serve` (uvicorn on a free localhost port, embedded:tiny.en on the CPU) and English speech
synthesized with espeak-ng for it to transcribe."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "embedded:tiny.en"
SENTENCES = [
    "The old lighthouse stood alone on the rocky island.",
    "My brother plays the guitar every Sunday morning.",
    "Fresh bread from the bakery smells wonderful.",
    "Please close the window before it starts to rain.",
    "The train to the city leaves at seven o'clock.",
    "She painted the kitchen a bright shade of yellow.",
    "We watched the stars from the top of the hill.",
    "The children built a castle out of sand.",
    "He forgot his umbrella at the office again.",
    "A small dog was sleeping under the table.",
    "The museum opens its doors at nine in the morning.",
    "They planted tomatoes and beans in the garden.",
    "Our teacher read us a story about a dragon.",
    "The river was cold and very clear.",
    "I would like a cup of hot tea with milk.",
    "The football match was cancelled because of snow.",
]
SERVER_LIMITS = ["--max-file-mb", "1", "--max-seconds", "20"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """`whispertune serve ARGS` in its own process (this checkout's sources), once /health answers."""
    port = free_port()
    # without the malloc variables, so the load test measures the allocator settings `whispertune serve` applies
    # itself (serve/memory.py)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "whispertune.cli", "serve", "--port", str(port),
                                 "--device", "cpu", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"whispertune serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            get_json(f"{url}/health")
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"whispertune serve did not answer /health in 180 s: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def tiny_en_server(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, process) of a server of embedded:tiny.en with a 1 MB upload and 20 s audio limit."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    proc, url = start_server(["--model", MODEL, *SERVER_LIMITS], tmp_path_factory.mktemp("serve") / "server.log")
    yield url, proc
    stop_server(proc)


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> list[Path]:
    """One espeak-ng recording (22.05 kHz WAV) of each of SENTENCES, in order."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    folder = tmp_path_factory.mktemp("speech")
    paths = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"clip{i:02d}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        paths.append(path)
    return paths


@pytest.fixture()
def client(tiny_en_server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{tiny_en_server[0]}/v1", api_key="not-needed", max_retries=0, timeout=120)


def closest_sentence(text: str) -> int:
    """The index of the sentence of SENTENCES nearest to `text` by WER (after whispertune's normalizer)."""
    from jiwer import wer

    from whispertune.inference.normalize import normalize_text

    hyp = normalize_text(text, "en")
    return min(range(len(SENTENCES)), key=lambda i: wer(normalize_text(SENTENCES[i], "en"), hyp or "-"))


@pytest.fixture(scope="session")
def nearest():
    """closest_sentence, for the tests (they share code only through fixtures)."""
    return closest_sentence


@pytest.fixture(scope="session")
def server_starter():
    """start_server, for tests that need a server of another model."""
    return start_server
