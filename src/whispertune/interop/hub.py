"""Publish an adapter, merged checkpoint or CTranslate2 export to the Hugging Face Hub with a model card.

The card (`README.md`, written into the directory before upload) is built from what the directory
and its run directory hold: `whispertune.json` (kind, base, language, task, parity), the adapter's
`adapter_config.json`, the run's `config.yaml` (training config) and `metrics.json` (evaluation).
A README.md written by a person is left alone; ours and peft's empty template card are replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..inference.generation import ADAPTER_META

CARD_MARKER = "<!-- written by whispertune -->"
_TRAINING_KEYS = {"lora": None, "quantization": ("mode",), "train": ("learning_rate", "max_steps", "num_epochs",
                  "per_device_batch_size", "gradient_accumulation_steps", "warmup_steps", "freeze_encoder", "precision"),
                  "data": ("source", "path", "config_name", "train_split", "eval_split", "max_train_samples")}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    return data if isinstance(data, dict) else {}


def describe(path: str | Path) -> dict[str, Any]:
    """What `path` holds: kind (adapter / merged / ct2 / model), its whispertune.json, run config and metrics."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory")
    meta = _read_json(folder / ADAPTER_META)
    if (folder / "adapter_config.json").is_file():
        kind = "adapter"
    elif (folder / "model.bin").is_file():
        kind = "ct2"
    elif any(folder.glob("*.safetensors")):
        kind = meta.get("kind", "model")
    else:
        raise UserError(f"{folder}: no adapter_config.json, model.bin or *.safetensors; nothing to publish")
    candidates = [folder.resolve().parent] if kind == "adapter" else []
    if meta.get("run_dir"):
        candidates.append(Path(meta["run_dir"]))
    run_dir = next((d for d in candidates if (d / "config.yaml").is_file() or (d / "metrics.json").is_file()), None)
    config: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{run_dir / 'config.yaml'}: not readable YAML ({exc})") from None
    return {"kind": kind, "meta": meta, "adapter_config": _read_json(folder / "adapter_config.json"),
            "config": config, "metrics": _read_json(run_dir / "metrics.json") if run_dir else {}}


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    """Every number in metrics.json, flattened (`eval.eval_wer`), as table rows."""
    rows: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(f"| {prefix} | {value:.4g} |")

    walk("", metrics)
    return ["| metric | value |", "|---|---|", *rows] if rows else ["No evaluation metrics were recorded."]


def _usage(kind: str, repo_id: str, base: str, language: str | None, task: str) -> str:
    lang = language or "en"
    if kind == "adapter":
        return f"""```bash
whispertune transcribe clip.wav --adapter {repo_id}
```

```python
from peft import PeftModel
from transformers import AutoProcessor, WhisperForConditionalGeneration

base = WhisperForConditionalGeneration.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{repo_id}").merge_and_unload()
processor = AutoProcessor.from_pretrained("{repo_id}")
# model.generate(input_features=..., language="{lang}", task="{task}")
```"""
    if kind == "ct2":
        return f"""```python
from faster_whisper import WhisperModel

model = WhisperModel("{repo_id}", device="cpu", compute_type="int8")
segments, info = model.transcribe("clip.wav", language="{lang}", task="{task}", beam_size=1)
print(" ".join(s.text for s in segments))
```"""
    return f"""```bash
whispertune transcribe clip.wav --model {repo_id} --language {lang}
```

```python
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="{repo_id}")
print(asr("clip.wav", generate_kwargs={{"language": "{lang}", "task": "{task}"}})["text"])
```"""


def model_card(path: str | Path, repo_id: str) -> str:
    """The README.md text for the directory `path` published as `repo_id`."""
    info = describe(path)
    meta, config, kind = info["meta"], info["config"], info["kind"]
    base = str(meta.get("base_model") or info["adapter_config"].get("base_model_name_or_path")
               or config.get("model", {}).get("name_or_path") or "unknown")
    language, task = meta.get("language"), meta.get("task") or "transcribe"
    data = config.get("data", {})
    what = {"adapter": "a LoRA adapter for", "merged": "a merged (LoRA folded in) fine-tune of",
            "ct2": f"a CTranslate2 ({meta.get('quantization', '?')}) export, for faster-whisper, of a fine-tune of",
            "model": "a Whisper checkpoint derived from"}[kind]
    tags = ["whisper", "automatic-speech-recognition", "whispertune"] + (["peft", "lora"] if kind == "adapter" else [])
    tags += ["ctranslate2", "faster-whisper"] if kind == "ct2" else []
    front = {"language": [language] if language else None, "tags": tags, "pipeline_tag": "automatic-speech-recognition",
             "library_name": {"adapter": "peft", "ct2": "ctranslate2"}.get(kind, "transformers")}
    if not base.startswith("embedded:") and base != "unknown" and not Path(base).is_absolute():
        front["base_model"] = base
    lines = ["---", yaml.safe_dump({k: v for k, v in front.items() if v}, sort_keys=False).strip(), "---",
             CARD_MARKER, f"# {repo_id.split('/')[-1]}", "",
             f"This is {what} `{base}` (language: {meta.get('language_name') or language or 'not set'}, task: {task}), "
             "made with whispertune.", "", "## Training data", ""]
    if data:
        lines.append(f"Source ({data.get('source', '?')}): `{data.get('path') or '?'}`"
                     f"{' (config ' + str(data['config_name']) + ')' if data.get('config_name') else ''}; train split "
                     f"`{data.get('train_split', '?')}`, evaluation split `{data.get('eval_split', '?')}`.")
    else:
        lines.append("No training configuration was found next to this model.")
    lines += ["", "## Training configuration", ""]
    picked = {s: (config.get(s) if keys is None else {k: config.get(s, {}).get(k) for k in keys})
              for s, keys in _TRAINING_KEYS.items() if config.get(s)}
    lines += ["```yaml", yaml.safe_dump(picked, sort_keys=False).strip(), "```"] if picked else ["Not recorded."]
    lines += ["", "## Evaluation", "", *_metric_lines(info["metrics"])]
    if meta.get("parity"):
        p = meta["parity"]
        lines += ["", f"Export parity on {p['n_clips']} clips: WER transformers {p['wer_transformers']:.2f}, "
                  f"CTranslate2 {p['wer_ct2']:.2f} (margin {p['margin']:g})."]
    lines += ["", "## How to use", "", _usage(kind, repo_id, base, language, task), ""]
    return "\n".join(lines)


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    try:  # the HTTP client huggingface_hub uses (httpx2 in today's releases, httpx before)
        import httpx2 as client
    except ImportError:
        import httpx as client
    return HfHubHTTPError, OSError, ValueError, client.HTTPError


def _replaceable(readme: Path) -> bool:
    """No README.md, one we wrote, or the placeholder card `peft`'s save_pretrained writes."""
    if not readme.is_file():
        return True
    text = readme.read_text(encoding="utf-8", errors="replace")
    return CARD_MARKER in text or ("[More Information Needed]" in text and "- PEFT " in text)


def push(path: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         commit_message: str | None = None) -> str:
    """Write the model card into `path`, create `repo_id` if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(path)
    card = model_card(folder, repo_id)
    readme = folder / "README.md"
    if _replaceable(readme):
        readme.write_text(card, encoding="utf-8")
    api = HfApi(token=token)
    message = commit_message or f"Upload {describe(folder)['kind']} with whispertune"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=message,
                                   ignore_patterns=[".*", "**/.*"])
    except _hub_errors() as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot push {folder} to the Hub as {repo_id}: {detail}") from None
    return str(getattr(commit, "commit_url", commit))
