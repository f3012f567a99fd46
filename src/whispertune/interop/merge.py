"""Merge a LoRA adapter into its base and write a plain transformers checkpoint.

`merge` re-loads the base UNQUANTIZED (merging into int8/nf4 weights would round the update away),
applies the adapter and folds it in (`merge_and_unload`). The output directory gets a
`whispertune.json` (what it is, base, language, task) that `hub.push` reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..config import ModelConfig, QuantizationConfig
from ..errors import UserError
from ..inference.generation import ADAPTER_META, adapter_metadata, base_of_adapter
from ..model.portable import write_portable_files
from ..training.model_card import write_card

DTYPES = ("float32", "float16")


def prepare_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserError(f"{out}: already exists and is not empty; choose another --out or pass --force")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    return out


def merge(adapter_dir: str | Path, out_dir: str | Path, *, dtype: str = "float32", model: str | None = None,
          overwrite: bool = False) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its (unquantized) base; write a transformers checkpoint.

    `out_dir` receives model.safetensors, config + generation config (language/task set), processor
    files, preprocessor_config.json and whispertune.json. `model` overrides the adapter's base.
    """
    from peft import PeftModel

    # lazy: `whispertune --help` imports this module
    from ..languages import language_fields
    from ..model.loading import load_base, load_processor, resolve_name

    if dtype not in DTYPES:
        raise UserError(f"dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
    adapter = str(adapter_dir)
    adapter_cfg, meta = adapter_metadata(adapter)
    base_name = model or base_of_adapter(adapter_cfg, meta, adapter)
    languages = language_fields(meta.get("language"))
    code, task = languages["language"], meta.get("task") or "transcribe"
    out = prepare_out_dir(out_dir, overwrite)

    base_path = resolve_name(base_name)
    base = load_base(ModelConfig(name_or_path=base_path, language=code, task=task), QuantizationConfig(mode="none"),
                     for_training=False, device="cpu")
    try:
        peft_model = PeftModel.from_pretrained(base, adapter, is_trainable=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load adapter {adapter!r} on {base_name!r}: {exc}") from None
    merged = peft_model.merge_and_unload()
    if dtype == "float16":
        merged = merged.half()
    has_processor = Path(adapter, "tokenizer.json").is_file() or Path(adapter, "processor_config.json").is_file()
    processor = load_processor(adapter if has_processor else base_path, code, task)

    # write next to the destination, then rename: an interrupted merge leaves no half checkpoint
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp)  # safetensors
        base_fields = write_portable_files(tmp, base_name=base_name, base_path=base_path, processor=processor,
                                           language=code, task=task)
        run_dir = Path(adapter).resolve().parent if Path(adapter).is_dir() else None
        info = {"kind": "merged", "base_model": base_name, **base_fields, "adapter": adapter, **languages, "task": task,
                "dtype": dtype, "adapter_quantization": meta.get("quantization"), "lora": meta.get("lora"),
                "run_dir": str(run_dir) if run_dir and (run_dir / "config.yaml").is_file() else meta.get("run_dir")}
        (tmp / ADAPTER_META).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
        write_card(tmp, str(out))
        if out.exists():
            out.rmdir()  # the empty directory prepare_out_dir allowed
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
