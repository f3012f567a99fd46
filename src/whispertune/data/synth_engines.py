"""The speech synthesizers behind `synth`: which engines (espeak-ng, Festival) run here, the voice
settings drawn for each sentence, and one run of an engine into a wav file."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

INSTALL = {
    "espeak-ng": "sudo apt-get install espeak-ng",
    "festival": "sudo apt-get install festival festvox-mr-nsk",
}
DEFAULT_BINARIES = {"espeak-ng": "espeak-ng", "festival": "text2wave"}
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
ESPEAK_BASE_VOICES = {"en": ("en-us", "en")}  # other languages: the language code itself
# Festival voice per language; the Debian English voices (festvox-kallpc16k) are often not installed.
FESTIVAL_VOICES = {"mr": "marathi_NSK_diphone", "en": "kal_diphone"}
FESTIVAL_VOICE_PACKAGES = {"mr": "festvox-mr-nsk", "en": "festvox-kallpc16k"}
FESTIVAL_SHARE = 1 / 3  # share of the variants given to Festival when it is available
RATE_RANGE = (130, 190)  # words per minute (espeak-ng -s); Festival gets the same tempo as a stretch
PITCH_RANGE = (30, 70)  # espeak-ng -p (0-99); Festival gets a mean F0 derived from it


@dataclass(frozen=True)
class Voice:
    """One engine setting: `voice` is the espeak-ng voice (`mr+f2`) or the Festival voice name."""

    engine: str
    voice: str
    rate: int
    pitch: int


def check_engines(
    language: str, engines: Sequence[str], binaries: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """Engines that can run here (engine -> binary path) and notes on those left out.

    espeak-ng missing is an error; Festival (binary or voice) missing is a note while espeak-ng runs."""
    binaries = {**DEFAULT_BINARIES, **(binaries or {})}
    unknown = [e for e in engines if e not in DEFAULT_BINARIES]
    if unknown or not engines:
        raise UserError(f"unknown synthesis engine(s) {unknown or engines}; choose from {', '.join(DEFAULT_BINARIES)}")
    usable, notes = {}, []
    for engine in engines:
        path = shutil.which(binaries[engine])
        problem = None if path else f"{engine} is not installed ({binaries[engine]} not found); install it with: {INSTALL[engine]}"
        if path and engine == "festival" and not _festival_voice_works(path, language):
            package = FESTIVAL_VOICE_PACKAGES.get(language)
            problem = f"Festival has no working voice for {language!r}" + (
                f" ({FESTIVAL_VOICES[language]}; install it with: sudo apt-get install {package})" if package else ""
            )
        if problem is None:
            usable[engine] = path
        elif engine == "festival" and "espeak-ng" in engines:  # (a missing espeak-ng raises on its turn)
            notes.append(f"{problem}: using espeak-ng only")
        else:
            raise UserError(problem)
    if "espeak-ng" in usable and not _espeak_has_language(usable["espeak-ng"], language):
        raise UserError(f"espeak-ng has no voice for language {language!r} (see espeak-ng --voices)")
    return usable, notes


def _espeak_has_language(binary: str, language: str) -> bool:
    out = subprocess.run([binary, f"--voices={language}"], capture_output=True, text=True).stdout
    return len(out.strip().splitlines()) > 1  # a header line, then one line per voice


def _festival_voice_works(binary: str, language: str) -> bool:
    if language not in FESTIVAL_VOICES:
        return False
    with tempfile.TemporaryDirectory() as tmp:  # the voice may be absent or broken: speak one word
        return run_festival(binary, "1", Voice("festival", FESTIVAL_VOICES[language], 160, 50), Path(tmp) / "probe.wav") is None


def draw_voices(language: str, split: str, index: int, variants: int, seed: int, engines: Sequence[str],
                voices: Sequence[str] | None = None, exclude_voices: Sequence[str] = ()) -> list[Voice]:
    """`variants` distinct settings for one sentence, drawn from (seed, language, split, index) only.

    `voices` (espeak-ng names such as `mr+f4`, or Festival's voice name) keeps only those; `exclude_voices`
    leaves those out: a voice held out of a training corpus can then be the only one of a test corpus."""
    rng = random.Random(f"{seed}:{language}:{split}:{index}")
    espeak_voices = [f"{base}+{v}" for base in ESPEAK_BASE_VOICES.get(language, (language,)) for v in ESPEAK_VARIANTS]
    allowed = [v for v in espeak_voices if (voices is None or v in voices) and v not in exclude_voices]
    festival_voice = FESTIVAL_VOICES.get(language)
    festival_allowed = "festival" in engines and (voices is None or festival_voice in voices) \
        and festival_voice not in exclude_voices
    espeak_allowed = "espeak-ng" in engines and bool(allowed)
    if not (festival_allowed or espeak_allowed):
        raise UserError(f"no voice left to synthesize with (voices {list(voices or [])}, excluded "
                        f"{list(exclude_voices)}); espeak-ng voices for {language!r}: {', '.join(espeak_voices)}"
                        + (f"; Festival: {festival_voice}" if festival_voice else ""))
    rng.shuffle(espeak_voices)
    espeak_voices = [v for v in espeak_voices if v in allowed]
    chosen = []
    for variant in range(variants):
        rate, pitch = rng.randint(*RATE_RANGE), rng.randint(*PITCH_RANGE)
        use_festival = festival_allowed and (not espeak_allowed or rng.random() < FESTIVAL_SHARE)
        if use_festival:
            chosen.append(Voice("festival", festival_voice, rate, pitch))
        else:
            chosen.append(Voice("espeak-ng", espeak_voices[variant % len(espeak_voices)], rate, pitch))
    return chosen


def run_espeak(binary: str, text: str, voice: Voice, wav: Path) -> str | None:
    cmd = [binary, "-v", voice.voice, "-s", str(voice.rate), "-p", str(voice.pitch), "-b", "1", "--stdin", "-w", str(wav)]
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=120)
    return None if proc.returncode == 0 and wav.is_file() else _describe(proc)


def run_festival(binary: str, text: str, voice: Voice, wav: Path) -> str | None:
    # The Marathi voice leaves Int_Method unset ("Feature Int_Method not defined"): set the simple
    # intonation model with a mean F0 from the pitch, and slow or speed it up like espeak-ng's rate.
    stretch = 1.2 * 160 / voice.rate
    f0_mean = 80 + 1.2 * voice.pitch
    cmd = [
        binary,
        "-eval", f"(voice_{voice.voice})",
        "-eval", "(Parameter.set 'Int_Method 'Simple)",
        "-eval", f"(set! int_simple_params '((f0_mean {f0_mean:.0f}) (f0_std 15)))",
        "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})",
        "-o", str(wav),
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=120)
    # text2wave can exit 0 after a Scheme error, leaving an empty file
    if proc.returncode == 0 and wav.is_file() and wav.stat().st_size > 44:
        return None
    return _describe(proc)


def _describe(proc: subprocess.CompletedProcess) -> str:
    status = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return f"{status}, {proc.stderr.decode(errors='replace').strip()[-300:] or 'no audio written'}"
