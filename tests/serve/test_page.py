"""The web page of `whispertune serve` in headless Chromium, driven over the DevTools protocol: `/?record=S`
records S seconds from Chromium's fake microphone (fed an espeak-ng clip), the page posts the WebM/Opus
recording to /v1/audio/transcriptions and shows the transcript, which must be that clip's sentence. Skipped
without Chromium (CI has none). With WHISPERTUNE_SERVE_SCREENSHOT=PATH the screenshot is also saved there
(docs/serve.png was made so)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

pytestmark = [pytest.mark.embedded, pytest.mark.synth]

CLIP = 6  # "We watched the stars from the top of the hill."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevTools:
    """One page of a headless Chromium, over its DevTools WebSocket."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def text_of(self, element_id: str) -> str:
        result = self.call("Runtime.evaluate", expression=f"document.getElementById({element_id!r}).textContent")
        return result["result"].get("value") or ""


def test_record_from_the_microphone_and_read_the_transcript(tiny_en_server, speech_clips, nearest, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("chromium not installed")
    websocket = pytest.importorskip("websockets.sync.client")
    port, clip = _free_port(), speech_clips[CLIP]
    seconds = round(sf.info(str(clip)).duration + 0.3, 1)  # the fake microphone loops its file
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
         f"--user-data-dir={tmp_path / 'profile'}", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={clip}",
         "--window-size=900,700", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pages = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    pages = [p for p in json.load(response) if p["type"] == "page"]
                break
            except OSError:
                time.sleep(0.1)
        assert pages, "chromium's DevTools endpoint did not answer"
        with websocket.connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            page = DevTools(ws)
            page.call("Page.navigate", url=f"{tiny_en_server[0]}/?record={seconds}")
            deadline, status = time.monotonic() + 120, ""
            while time.monotonic() < deadline and ": done in" not in status and "error" not in status:
                time.sleep(0.5)
                status = page.text_of("status")
            assert status.startswith("recording.webm: done in"), status
            transcript = page.text_of("result")
            assert nearest(transcript) == CLIP, transcript
            png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
            assert png.startswith(b"\x89PNG")
            if os.environ.get("WHISPERTUNE_SERVE_SCREENSHOT"):
                Path(os.environ["WHISPERTUNE_SERVE_SCREENSHOT"]).write_bytes(png)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
