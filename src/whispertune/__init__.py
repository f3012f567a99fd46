"""whispertune: fine-tune Whisper with LoRA on an 8-bit or 4-bit base, then evaluate and ship it.

The public Python API, importable from the package root:

    import whispertune
    cfg = whispertune.load_config("configs/lean-large-v2-marathi.yaml", ["train.max_steps=100"])
    result = whispertune.train(cfg)                          # -> TrainResult
    scores = whispertune.evaluate(adapter=str(result.adapter_dir), data=cfg.data, split="test")  # EvalResult
    texts = whispertune.transcribe(["talk.mp3"], adapter=str(result.adapter_dir))               # [Transcript]
    check = whispertune.check_data(cfg, adapter=str(result.adapter_dir), out_dir="check/")    # DataCheckResult

Names resolve on first use (PEP 562), so `import whispertune` and `whispertune --help` stay free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that owns it
_API = {
    "load_config": "config", "Config": "config",
    "train": "training.trainer", "TrainResult": "training.trainer",
    "evaluate": "inference.evaluate", "EvalResult": "inference.evaluate", "Prediction": "inference.evaluate",
    "transcribe": "inference.transcribe", "Transcript": "inference.transcribe", "Segment": "inference.transcribe",
    "load_for_inference": "inference.generation",
    "check_data": "inference.data_check", "DataCheckResult": "inference.data_check",
    "LoadOptions": "inference.options", "DecodingOptions": "inference.options",
    "resolve_plan": "training.plan", "Plan": "training.plan",
    "UserError": "errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'whispertune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
