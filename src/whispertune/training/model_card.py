"""The model card (README.md) of an adapter, merged checkpoint, CTranslate2 or GGML export.

Built from what the directory and its run directory hold: `whispertune.json` (kind, base, language,
task, parity), the adapter's `adapter_config.json`, the run's `config.yaml` and `metrics.json`. The
training stage writes it into `adapter/`, the exports into theirs, `whispertune push` before uploading.
The snippets name the directory as `repo_id` (the Hub id once pushed) and load with the libraries alone.
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
_WHAT = {"adapter": "a LoRA adapter for", "merged": "a merged (LoRA folded in) fine-tune of",
         "ct2": "a CTranslate2 ({q}) export, for faster-whisper, of", "ggml": "a GGML ({q}) export, for whisper.cpp, of",
         "model": "a Whisper checkpoint derived from"}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    return data if isinstance(data, dict) else {}


def describe(path: str | Path) -> dict[str, Any]:
    """What `path` holds: kind (adapter / merged / ct2 / ggml / model), its whispertune.json, run config, metrics."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory")
    meta = _read_json(folder / ADAPTER_META)
    if (folder / "adapter_config.json").is_file():
        kind = "adapter"
    elif (folder / "model.bin").is_file():
        kind = "ct2"
    elif meta.get("kind") == "ggml":
        kind = "ggml"
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


def _rates(evals: dict[str, Any]) -> str:
    """"WER 12.34, CER 5.67" of an evaluation's numbers (those it has)."""
    found = [(name, evals.get(f"eval_{name.lower()}")) for name in ("WER", "CER")]
    return ", ".join(f"{name} {value:.2f}" for name, value in found if isinstance(value, (int, float)))


def _measured(metrics: dict[str, Any]) -> list[str]:
    """The headline: under train.select_best the kept checkpoint's step and WER/CER (the last evaluation's
    after it), else the last evaluation's WER/CER."""
    best, last = metrics.get("best") or {}, _rates(metrics.get("eval", {}))
    if not best.get("checkpoint"):
        return [f"Measured on the evaluation split: {last}", ""] if last else []
    chosen = _rates(best.get("eval", {})) or f"{best['metric']} {best['score']:.4g}"
    then = f" The last evaluation, at step {metrics['global_step']}: {last}." if last and "global_step" in metrics else ""
    return [f"Measured on the evaluation split: {chosen} at step {best['step']} (`{best['checkpoint']}`), the "
            f"checkpoint `train.select_best` kept as this model (lowest {best['metric']}).{then}", ""]


def _usage(kind: str, repo_id: str, meta: dict[str, Any], language: str | None, task: str) -> str:
    lang = language or "en"
    read = 'audio, rate = sf.read("clip.wav")  # 16 kHz mono'
    if kind == "adapter":
        return f"""```bash
whispertune transcribe clip.wav --adapter {repo_id}
```

```python
import soundfile as sf
from peft import PeftConfig, PeftModel
from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

adapter = "{repo_id}"
base = PeftConfig.from_pretrained(adapter).base_model_name_or_path  # a Hub id
whisper = WhisperForConditionalGeneration.from_pretrained(base)
whisper.generation_config = GenerationConfig.from_pretrained(adapter)  # decodes language and task of the fine-tune
model = PeftModel.from_pretrained(whisper, adapter)
processor = WhisperProcessor.from_pretrained(adapter)
{read}
features = processor(audio, sampling_rate=rate, return_tensors="pt").input_features
print(processor.batch_decode(model.generate(input_features=features), skip_special_tokens=True)[0])
```"""
    if kind == "ct2":
        return f"""```python
from faster_whisper import WhisperModel

model = WhisperModel("{repo_id}", device="cpu", compute_type="int8")
segments, info = model.transcribe("clip.wav", language="{lang}", task="{task}", beam_size=1)
print(" ".join(s.text.strip() for s in segments))
```"""
    if kind == "ggml":
        name = meta.get("file", "ggml-model-f16.bin")
        where = (f'path = "{repo_id}/{name}"' if Path(repo_id).is_dir() else
                 f'from huggingface_hub import hf_hub_download\n\npath = hf_hub_download("{repo_id}", "{name}")')
        return f"""```python
from pywhispercpp.model import Model

{where}
model = Model(path, language="{lang}")
print(" ".join(s.text.strip() for s in model.transcribe("clip.wav")))
```

```bash
whisper-cli -m {repo_id}/{name} -l {lang} -f clip.wav   # whisper.cpp's command line
```"""
    return f"""```bash
whispertune transcribe clip.wav --model {repo_id} --language {lang}
```

```python
import soundfile as sf
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="{repo_id}")
{read}
# num_beams=1: greedy, as whispertune decodes (transformers 5 pipelines default to 5-beam search)
print(asr({{"raw": audio, "sampling_rate": rate}}, generate_kwargs={{"num_beams": 1}})["text"])
```"""


def _interval(parity: dict[str, Any]) -> str:
    """The bootstrap interval of the WER difference the parity check decided on, when the report has one."""
    low, high = parity.get("interval") or (None, None)
    return "" if low is None else f"95% interval of the difference [{low:+.2f}, {high:+.2f}], "


def _parity_lines(parity: dict[str, Any], fmt: str = "") -> list[str]:
    client, n = parity["client"], parity["n_clips"]
    what = f"`{fmt}` " if fmt else ""
    return ["", f"Export {what}parity through {client} (run on the export, its own audio front end) on {n} {parity['clips']} "
            f"clips: WER whispertune (transformers) {parity['wer_transformers']:.2f}, {client} {parity['wer_client']:.2f} "
            f"({_interval(parity)}margin {parity['margin']:g}); identical transcripts {parity['identical']}/{n} "
            f"({100 * parity['identical'] / n:.0f}%)."]


def model_card(path: str | Path, repo_id: str | None = None) -> str:
    """The README.md text for the directory `path`, published as `repo_id` (default: the directory's path)."""
    info = describe(path)
    meta, config, kind = info["meta"], info["config"], info["kind"]
    repo_id = repo_id or str(path)
    written = str(meta.get("base_model") or info["adapter_config"].get("base_model_name_or_path")
                  or config.get("model", {}).get("name_or_path") or "unknown")
    hub_base = meta.get("base_model_hub_id") or (
        written if not written.startswith("embedded:") and written != "unknown" and not Path(written).is_absolute()
        else None)
    language, task = meta.get("language"), meta.get("task") or "transcribe"
    data = config.get("data", {})
    what = _WHAT[kind].format(q=meta.get("quantization", "?"))
    tags = ["whisper", "automatic-speech-recognition", "whispertune"] + (["peft", "lora"] if kind == "adapter" else [])
    tags += {"ct2": ["ctranslate2", "faster-whisper"], "ggml": ["ggml", "whisper.cpp"]}.get(kind, [])
    front = {"language": [language] if language else None, "tags": tags, "pipeline_tag": "automatic-speech-recognition",
             "library_name": {"adapter": "peft", "ct2": "ctranslate2", "ggml": "whisper.cpp"}.get(kind, "transformers"),
             "base_model": hub_base}
    named = f"`{hub_base}`" + (f" (whispertune's `{written}`: the same weights, model.bin SHA-256 "
                               f"{meta['embedded_sha256']})" if meta.get("embedded_sha256") else "") if hub_base else f"`{written}`"
    lines = ["---", yaml.safe_dump({k: v for k, v in front.items() if v}, sort_keys=False).strip(), "---",
             CARD_MARKER, f"# {Path(repo_id).name}", "",
             f"This is {what} {named} (language: {meta.get('language_name') or language or 'not set'}, task: {task}), "
             "made with whispertune.", "", "## Training data", ""]
    if data:
        lines.append(f"Source ({data.get('source', '?')}): `{data.get('path') or '?'}`"
                     f"{' (config ' + str(data['config_name']) + ')' if data.get('config_name') else ''}; train split "
                     f"`{data.get('train_split', '?')}`, evaluation split `{data.get('eval_split', '?')}`.")
    else:
        lines.append("No training configuration was found next to this model.")
    lines += ["", "## Training configuration", ""]
    # unset keys of a whole section left out (the adalora_* keys of another variant)
    picked = {s: ({k: v for k, v in config[s].items() if v is not None} if keys is None
                  else {k: config.get(s, {}).get(k) for k in keys})
              for s, keys in _TRAINING_KEYS.items() if config.get(s)}
    lines += ["```yaml", yaml.safe_dump(picked, sort_keys=False).strip(), "```"] if picked else ["Not recorded."]
    lines += ["", "## Evaluation", ""]
    lines += _measured(info["metrics"])
    lines += _metric_lines(info["metrics"])
    for fmt, parity in (meta.get("parity_by_format") or {"": meta["parity"]} if meta.get("parity") else {}).items():
        lines += _parity_lines(parity, fmt)
    lines += ["", "## How to use", "", _usage(kind, repo_id, meta, language, task), ""]
    return "\n".join(lines)


def replaceable(readme: Path) -> bool:
    """No README.md, one we wrote, or the placeholder card `peft`'s save_pretrained writes."""
    if not readme.is_file():
        return True
    text = readme.read_text(encoding="utf-8", errors="replace")
    return CARD_MARKER in text or ("[More Information Needed]" in text and "- PEFT " in text)


def write_card(path: str | Path, repo_id: str | None = None) -> Path:
    """Write the card into `path`/README.md unless a person wrote that file."""
    readme = Path(path) / "README.md"
    if replaceable(readme):
        tmp = readme.with_name(".README.md.tmp")
        tmp.write_text(model_card(path, repo_id), encoding="utf-8")
        tmp.replace(readme)
    return readme
