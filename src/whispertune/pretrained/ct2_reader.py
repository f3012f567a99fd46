"""Read a CTranslate2 `model.bin` (binary format version 6) without CTranslate2 itself.

Layout (little-endian): u32 version, string spec name, u32 spec revision, u32 variable count, then
per variable: string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, raw data; then
u32 alias count and (alias, target) string pairs. A string is a u16 length that counts a trailing
NUL, then the bytes. See docs/ct2-format.md.

The file is memory-mapped: the returned arrays are read-only views into it, nothing is copied.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import UserError

SUPPORTED_VERSION = 6

# CTranslate2's DataType enum order (include/ctranslate2/types.h). bfloat16 has no numpy type:
# it is read as raw 16-bit words and widened to float32 in `_as_numpy`.
DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}

QUANTIZED_HINT = (
    "whispertune needs float weights: convert the original model again with "
    "`ct2-transformers-converter --model openai/whisper-<size> --output_dir DIR "
    "--copy_files tokenizer.json --quantization float16`"
)


class CT2FormatError(UserError):
    """A model.bin that is not a readable CTranslate2 model (truncated, garbage, unknown version)."""


class _Cursor:
    """Bounds-checked sequential reader over the mapped bytes."""

    def __init__(self, data: np.ndarray, path: Path):
        self.data = data
        self.view = memoryview(data)
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise CT2FormatError(
                f"{self.path}: truncated while reading {what} (needs {end} bytes, file has {len(self.data)}); "
                "the download or the assembly of its parts is incomplete"
            )
        chunk = self.view[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", f"{what} length")
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.path}: corrupt file: {what} at byte {self.pos - length} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"{self.path}: corrupt file: {what} at byte {self.pos - length} is not UTF-8") from None


def _as_numpy(raw: np.ndarray, type_id: int, dims: tuple[int, ...]) -> np.ndarray:
    name, dtype = DTYPES[type_id]
    array = raw.view(dtype).reshape(dims)
    if name == "bfloat16":
        # bfloat16 is the upper half of a float32: shift the bits back into place.
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 model.bin (a file, or a directory holding one).

    Returns (spec_name, variables, aliases): variables maps names such as
    `encoder/layer_0/self_attention/linear_0/weight` to numpy arrays (rank-0 arrays for the scalar
    settings), aliases maps a duplicated variable's name onto the stored one.
    Raises `CT2FormatError` for unreadable files and `UserError` for quantized (int8/int16) models.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise UserError(f"{path}: no such file (a CTranslate2 model directory holds model.bin)")
    if path.stat().st_size < 4:
        raise CT2FormatError(f"{path}: {path.stat().st_size} bytes: too short to be a CTranslate2 model")

    data = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(data, path)
    (version,) = cur.unpack("I", "version")
    if version != SUPPORTED_VERSION:
        raise CT2FormatError(
            f"{path}: binary version {version}, whispertune reads version {SUPPORTED_VERSION} "
            "(written by CTranslate2 >= 3); not a CTranslate2 model, or one from an unsupported release"
        )
    spec_name = cur.string("spec name")
    (_revision,) = cur.unpack("I", "spec revision")
    (count,) = cur.unpack("I", "variable count")

    variables: dict[str, np.ndarray] = {}
    for index in range(count):
        name = cur.string(f"name of variable {index}")
        (rank,) = cur.unpack("B", f"rank of {name}")
        dims = cur.unpack(f"{rank}I", f"shape of {name}") if rank else ()
        type_id, nbytes = cur.unpack("BI", f"dtype of {name}")
        if type_id not in DTYPES:
            raise CT2FormatError(f"{path}: corrupt file: variable {name!r} has unknown dtype id {type_id}")
        expected = int(np.prod(dims, dtype=np.int64)) * DTYPES[type_id][1].itemsize
        if nbytes != expected:
            raise CT2FormatError(
                f"{path}: corrupt file: variable {name!r} of shape {list(dims)} and dtype "
                f"{DTYPES[type_id][0]} declares {nbytes} bytes instead of {expected}"
            )
        start = cur.pos
        cur.take(nbytes, f"data of {name}")
        variables[name] = _as_numpy(data[start:start + nbytes], type_id, dims)

    (alias_count,) = cur.unpack("I", "alias count")
    aliases = {}
    for index in range(alias_count):
        alias = cur.string(f"alias {index}")
        aliases[alias] = cur.string(f"target of alias {alias!r}")
    if cur.pos != len(data):
        raise CT2FormatError(f"{path}: corrupt file: {len(data) - cur.pos} unexpected bytes after the last alias")
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"{path}: corrupt file: alias {alias!r} points to missing variable {target!r}")

    _refuse_quantized(path, variables)
    return spec_name, variables, aliases


def _refuse_quantized(path: Path, variables: dict[str, np.ndarray]) -> None:
    """Quantized models store integer weight matrices plus `*_scale` variables: refuse them."""
    for name, value in variables.items():
        integer_matrix = value.ndim >= 2 and value.dtype.kind in "iu"
        if integer_matrix or name.endswith("weight_scale"):
            kind = str(value.dtype) if integer_matrix else "int8"
            raise UserError(f"{path}: the model is quantized ({kind} weights, e.g. {name!r}); {QUANTIZED_HINT}")
