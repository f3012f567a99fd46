"""Files that make an adapter / merged / exported directory load on another machine, without whispertune.

- the base is named by something that resolves elsewhere: a Hub id, never a path into this machine's
  cache; for `embedded:` bases the Hub id of the same weights (`embedded_origin`), whose model.bin hash
  goes into whispertune.json so that the exact bytes trained on stay known;
- `generation_config.json` with the language and task, so that `generate()` without arguments decodes in
  the trained language (transformers 5 reads `language`/`task`; `forced_decoder_ids` would be ignored
  and warned about, so it is cleared);
- `preprocessor_config.json` next to the processor files (transformers 4 and faster-whisper read it);
- `tokenizer_config.json` with the special tokens under `additional_special_tokens`: transformers 5
  saves them as the list `extra_special_tokens`, which transformers 4.57 reads as a dict and fails on
  (`'list' object has no attribute 'keys'`); transformers 5 still reads the old key (it renames it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..pretrained.embedded import embedded_origin


def portable_base(name: str) -> tuple[str, dict[str, Any]]:
    """(what the artifact names as its base, the fields for whispertune.json about that base).

    `name` as the user wrote it (`embedded:whisper-base`, a Hub id or a local path)."""
    origin = embedded_origin(name)
    if origin is None:
        return name, {"base_model_hub_id": name if not Path(name).expanduser().exists() else None}
    return origin["hub_id"], {"base_model_hub_id": origin["hub_id"], "embedded_sha256": origin["embedded_sha256"]}


def _rewrite_json(path: Path, change) -> None:
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _tokenizer_config_for_both(data: dict[str, Any]) -> None:
    extra = data.get("extra_special_tokens")
    if isinstance(extra, list):
        data["additional_special_tokens"] = data.pop("extra_special_tokens")


def generation_config_for(base_path: str, language: str | None, task: str):
    """The base's generation config set to decode `language`/`task` by default (English-only: as it is)."""
    from transformers import GenerationConfig

    gen = GenerationConfig.from_pretrained(base_path)
    if language is not None and getattr(gen, "lang_to_id", None):
        gen.language = language
    if getattr(gen, "task_to_id", None):
        gen.task = task
    gen.forced_decoder_ids = None
    return gen


def write_portable_files(out: Path, *, base_name: str, base_path: str, processor, language: str | None,
                         task: str) -> dict[str, Any]:
    """Complete `out` (already holding the model or adapter files) as described in the module docstring.

    Returns the base fields for whispertune.json."""
    hub_name, fields = portable_base(base_name)
    processor.save_pretrained(out)
    processor.feature_extractor.save_pretrained(out)
    _rewrite_json(out / "tokenizer_config.json", _tokenizer_config_for_both)
    _rewrite_json(out / "adapter_config.json", lambda cfg: cfg.update(base_model_name_or_path=hub_name))
    generation_config_for(base_path, language, task).save_pretrained(out)
    return fields
