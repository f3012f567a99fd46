"""A/B rows of product_throughput.py: a spec's temporary change to the product's own settings, as a context
manager around that row only (`compile_options=`, `preset_fields=`, `fp8_products=`, `attention=`)."""

from __future__ import annotations

import contextlib
import dataclasses
from types import MappingProxyType
from unittest import mock

from whispertune.inference import batch_invariant
from whispertune.model import fp8
from whispertune.training import preset_surgery, presets


@contextlib.contextmanager
def all_patches(spec: dict):
    """Every change `spec` names, in force for the `with` block only."""
    with contextlib.ExitStack() as stack:
        for patch in (compile_options, fp8_products, decoder_attention, preset_fields):
            stack.enter_context(patch(spec))
        yield


def compile_options(spec: dict):
    """`compile_options=key:value;key:value`: an A/B row with the compiled layers' inductor options changed
    (`training.preset_surgery.COMPILE_OPTIONS`, which every compiled preset uses); values are 0/1 or text."""
    items = [x.split(":", 1) for x in spec.get("compile_options", "").split(";") if x]
    values = {k: _option_value(v) for k, v in items}
    return mock.patch.dict(preset_surgery.COMPILE_OPTIONS, values)


def _option_value(text: str):
    """0/1 as booleans, other integers as int (e.g. triton.multi_kernel:2), anything else as text."""
    if text in ("0", "1"):
        return text == "1"
    return int(text) if text.isdigit() else text


def preset_fields(spec: dict):
    """`preset_fields=lora_dropout_autocast:0`: an A/B row with fields of the spec's preset (training.presets) changed."""
    items = [x.split(":", 1) for x in spec.get("preset_fields", "").split(";") if x]
    if not items:
        return contextlib.nullcontext()
    name = spec.get("preset", "auto")
    changed = dataclasses.replace(presets.get_preset("lean" if name == "auto" else name),
                                  **{k: _option_value(v) for k, v in items})
    return mock.patch.object(presets, "PRESETS", MappingProxyType({**presets.PRESETS, changed.name: changed}))


def fp8_products(spec: dict):
    """`fp8_products=all`: an A/B row with both products of every frozen layer in FP8 (model.fp8.fp8_directions),
    the wide ones too; the default is the narrow-side rule."""
    if spec.get("fp8_products", "narrow") == "narrow":
        return contextlib.nullcontext()
    return mock.patch.object(fp8, "fp8_directions", lambda in_features, out_features: (True, True))


def decoder_attention(spec: dict):
    """`attention=eager|efficient`: an A/B row with the batch-invariant mode's decoder attention changed."""
    if "attention" not in spec:
        return contextlib.nullcontext()
    return mock.patch.object(batch_invariant, "DECODER_ATTENTION", spec["attention"])
