"""Evaluate a base model (+ adapter) on a data split: batched, length-sorted generation, WER/CER.

Any data source works: a `DataConfig` (read with `sources.load_examples`, features by
`features.prepare_split`), raw examples (`id`, `audio`, `text`), or an already prepared dataset
(`input_features`, `text` or `labels`, optional `duration`, `id`). Examples are generated longest
first so that the utterances of one batch end at similar lengths (Whisper features are always 30 s,
the padding that costs is in the decoded tokens); predictions are written back in dataset order.
References are the `text` column (the transcript itself); a dataset without one has its `labels`
decoded, skipping special tokens, as the reference recipe does.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from ..atomic_files import write_file_atomically
from ..config import DataConfig
from ..data.features import prepare_split
from ..data.report import REPORT_FILENAME, DataReport
from ..data.sources import load_examples
from ..errors import UserError
from .decode_guards import guarded_generate
from .generation import Loaded, check_decoding, load_for_inference
from .metrics import error_rates, utterance_rates
from .normalize import NormalizerKind
from .options import DecodingOptions, LoadOptions, resolve_batch_size


@dataclass
class Prediction:
    id: str
    reference: str
    hypothesis: str
    wer: float  # raw, x100
    cer: float
    wer_normalized: float
    cer_normalized: float


@dataclass
class EvalResult:
    wer: float
    cer: float
    wer_normalized: float
    cer_normalized: float
    n_utterances: int
    seconds: float
    predictions: list[Prediction] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # model, adapter, language, task, split, ...

    def metrics(self) -> dict[str, Any]:
        """Everything but the predictions (what metrics.json holds)."""
        out = asdict(self)
        out.pop("predictions")
        return out


def feature_block(dataset: Any, rows: list[int]) -> np.ndarray:
    """`input_features` of `rows` as one (len(rows), n_mels, frames) float32 array.

    Read through Arrow's flat value buffer: datasets' numpy formatter took 1.5-2 ms a row for an 80 x 3000
    feature (about 0.25 s a batch of 128, as long as a tenth of the batch's generation on an H200); this
    takes about 0.3 ms.
    """
    column = dataset.with_format("arrow")[rows].column("input_features").combine_chunks()
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type):
        return np.asarray(dataset.with_format("numpy", columns=["input_features"])[rows]["input_features"])
    n_mels = len(column[0])
    values = column.flatten().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(rows), n_mels, -1).astype(np.float32, copy=False)


def prefetched(read, items: list) -> Any:
    """`read(item)` for each item, the next one read in a background thread while the caller works on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, items[0]) if items else None
        for index in range(len(items)):
            current = pending.result()
            pending = pool.submit(read, items[index + 1]) if index + 1 < len(items) else None
            yield current


def length_order(durations: list[float]) -> list[int]:
    """Indices of the examples, longest first (stable for equal lengths)."""
    return [int(i) for i in np.argsort(-np.asarray(durations, dtype=float), kind="stable")]


def _as_dataset(dataset: Any) -> Any:
    """A map-style Dataset; a streaming one is written to an Arrow cache first (random access for sorting)."""
    if isinstance(dataset, datasets.IterableDataset):
        return datasets.Dataset.from_generator(lambda: (yield from dataset))
    return dataset


def prepare_eval_data(
    loaded: Loaded,
    *,
    data: DataConfig | None,
    split: str,
    dataset: Any,
    max_samples: int | None,
    report: Any,
) -> Any:
    """The prepared evaluation dataset (`input_features` + `text`/`labels`) for any accepted input."""
    info = loaded.info
    if dataset is None:
        if data is None:
            raise UserError("evaluate needs a data source: a data config (--config / --data.path) or a dataset")
        dataset = load_examples(data, split, report)
    dataset = _as_dataset(dataset)
    columns = set(dataset.column_names)
    if "input_features" not in columns:
        if "audio" not in columns:
            raise UserError(f"evaluation dataset has columns {sorted(columns)}; expected input_features or audio")
        cfg = data or DataConfig()
        dataset = prepare_split(
            dataset, loaded.processor, cfg, language=info.get("language"), task=info.get("task", "transcribe"),
            report=report, split=split, cache_dir=cfg.cache_dir, max_samples=max_samples or cfg.max_eval_samples,
        )
    if "text" not in dataset.column_names and "labels" not in dataset.column_names:
        raise UserError("evaluation dataset has neither a text nor a labels column: nothing to compare with")
    if max_samples is not None and len(dataset) > max_samples:
        dataset = dataset.select(range(max_samples))
    if len(dataset) == 0:
        raise UserError(f"no usable examples in split {split!r} (see the data report for what was skipped)")
    return dataset


def _references(dataset: Any, tokenizer: Any) -> list[str]:
    if "text" in dataset.column_names:
        return [str(t) for t in dataset["text"]]
    labels = [[tokenizer.pad_token_id if t == -100 else t for t in row] for row in dataset["labels"]]
    return [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]


def print_table(result: EvalResult) -> None:
    table = Table(title=f"whispertune evaluate: {result.info.get('split', '')} ({result.n_utterances} utterances)")
    table.add_column("metric")
    table.add_column("raw", justify="right")
    table.add_column("normalized", justify="right")
    table.add_row("WER %", f"{result.wer:.2f}", f"{result.wer_normalized:.2f}")
    table.add_row("CER %", f"{result.cer:.2f}", f"{result.cer_normalized:.2f}")
    table.add_row("seconds", f"{result.seconds:.1f}", "")
    Console().print(table)


def write_outputs(result: EvalResult, out_dir: str | Path) -> Path:
    """`metrics.json` and `predictions.jsonl` (one utterance per line, dataset order) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out / "predictions.jsonl",
                          "".join(json.dumps(asdict(pred), ensure_ascii=False) + "\n" for pred in result.predictions))
    # metrics last: a metrics.json present means its predictions are complete
    write_file_atomically(out / "metrics.json", json.dumps(result.metrics(), indent=2, ensure_ascii=False) + "\n")
    return out


def evaluate(
    model: str | None = None,
    adapter: str | None = None,
    *,
    data: DataConfig | None = None,
    split: str = "test",
    dataset: Any = None,
    load: LoadOptions = LoadOptions(),
    decoding: DecodingOptions = DecodingOptions(),
    normalizer: NormalizerKind = "auto",
    max_samples: int | None = None,
    sort_by_length: bool = True,
    encoder_outputs: torch.Tensor | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    loaded: Loaded | None = None,
    guard: bool = True,
) -> EvalResult:
    """Transcribe a split and score it; see the module docstring.

    `load`: what to load (ignored with `loaded`, a model already loaded); `decoding`: how to generate.
    `sort_by_length`: batches of similar lengths, longest first (False: dataset order). `encoder_outputs`:
    the encoder's outputs for the prepared dataset's rows (N, frames, d_model), e.g. cached for frozen-encoder
    training; the encoder is then not run. `guard`: the repetition guard of `decode_guards.guarded_generate`
    (the token limit by duration applies always).
    """
    if loaded is None:
        loaded = load_for_inference(model, adapter, load)
    check_decoding(loaded, decoding.max_new_tokens, decoding.num_beams)
    batch_size = resolve_batch_size(decoding.batch_size, loaded.info.get("device", "cpu"))
    report = DataReport()
    prepared = prepare_eval_data(loaded, data=data, split=split, dataset=dataset, max_samples=max_samples,
                                 report=report)
    references = _references(prepared, loaded.processor.tokenizer)
    ids = [str(i) for i in prepared["id"]] if "id" in prepared.column_names else [str(i) for i in range(len(prepared))]
    durations = prepared["duration"] if "duration" in prepared.column_names else [len(r) for r in references]
    order = length_order(durations) if sort_by_length else list(range(len(prepared)))
    if encoder_outputs is not None and len(encoder_outputs) != len(prepared):
        raise UserError(f"encoder_outputs has {len(encoder_outputs)} rows for {len(prepared)} examples")
    clip_seconds = [float(d) for d in durations] if "duration" in prepared.column_names else None

    hypotheses: list[str] = [""] * len(prepared)
    new_tokens = 0
    looped = still_looping = redecoded = 0
    fallback_seconds = 0.0
    start = time.perf_counter()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if encoder_outputs is not None:
        reader = (encoder_outputs[rows] for rows in batches)
    else:
        reader = prefetched(lambda rows: feature_block(prepared, rows), batches)
    for batch, feats in tqdm(zip(batches, reader), total=len(batches), desc=f"evaluate {split}", unit="batch",
                             disable=not progress):
        guarded = guarded_generate(loaded, feats, encoded=encoder_outputs is not None,
                                   seconds=clip_seconds and [clip_seconds[i] for i in batch],
                                   max_new_tokens=decoding.max_new_tokens, num_beams=decoding.num_beams,
                                   autocast=decoding.autocast, guard=guard, names=[ids[i] for i in batch])
        generated = guarded.generated
        new_tokens += generated.new_tokens
        looped, still_looping = looped + sum(guarded.looped), still_looping + sum(guarded.still_looping)
        redecoded += guarded.redecoded
        fallback_seconds += guarded.fallback_seconds
        for index, text in zip(batch, generated.texts):
            hypotheses[index] = text
    seconds = time.perf_counter() - start

    lang = loaded.info.get("language")
    rates = error_rates(references, hypotheses, lang, normalizer)
    predictions = [
        Prediction(id=i, reference=r, hypothesis=h, **utterance_rates(r, h, lang, normalizer))
        for i, r, h in zip(ids, references, hypotheses)
    ]
    info = {**loaded.info, "split": split, "normalizer": normalizer, "batch_size": batch_size,
            "max_new_tokens": decoding.max_new_tokens, "num_beams": decoding.num_beams, "data": report.summary_line(),
            "generated_tokens": new_tokens, "tokens_per_s": round(new_tokens / seconds, 1) if seconds else None,
            "guard": {"enabled": guard, "looping_greedy": looped, "looping_kept": still_looping,
                      "fallback_decodes": redecoded, "fallback_seconds": round(fallback_seconds, 3)}}
    result = EvalResult(
        wer=rates["wer"], cer=rates["cer"], wer_normalized=rates["wer_normalized"],
        cer_normalized=rates["cer_normalized"], n_utterances=len(references), seconds=seconds,
        predictions=predictions, info=info,
    )
    if out_dir is not None:
        write_outputs(result, out_dir)
        report.write(Path(out_dir) / REPORT_FILENAME)
    if progress:
        print_table(result)
    return result
