"""Training stage: LoRA fine-tuning of a (quantized) Whisper base with Seq2SeqTrainer.

A run directory (`train.output_dir`) receives `config.yaml`, `data_report.json`, atomic adapter-only
`checkpoints/checkpoint-N/`, the final `adapter/` (+ processor files + `whispertune.json`),
`metrics.json`, `train_log.jsonl` (every log line, flushed as it happens), TensorBoard `logs/` and
`loss.png`. `train(cfg, resume=True)` continues from the newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback, set_seed

from .. import __version__
from ..atomic_files import write_dir_atomically, write_file_atomically
from ..config import Config
from ..data.augment import augmented, enable_spec_augment
from ..data.collate import SpeechCollator, training_view
from ..data.features import prepare_split
from ..data.packing import pack_split
from ..data.report import REPORT_FILENAME, SKIP_LOG_FILENAME, DataReport, SkipLog
from ..data.sources import load_examples
from ..data.timestamps import TimestampChoice
from ..data.triage import triage_training_split
from ..errors import UserError
from ..inference.generation import ADAPTER_META
from ..inference.metrics import error_rates
from ..model.loading import load_base, load_processor
from ..model.lora import add_lora, prepare_for_training
from ..model.portable import write_portable_files
from .arguments import training_arguments
from .atomic_trainer import AtomicCheckpointTrainer
from .callbacks import DatasetEpoch, StageClock, callbacks, trim_log
from .checkpoints import (
    STAGING,
    best_record,
    check_lora_matches,
    checkpoint_step,
    finished_at,
    resolve_resume,
)
from .distributed import check_distributed, is_main, launched_world_size, main_first, on_main_then_shared, rank_state
from .encoder_cache import CrossKVCollator, cached_dataset
from .interrupt import StopOnSignal
from .model_card import write_card
from .plan import Plan, resolve_plan
from .plots import plot_loss
from .preset_surgery import prepare_model
from .run_dir import RunIdentity, RunLock, claim, data_fingerprint
from .streaming import StreamReportCallback, stream_split, unstreamed
from .variants import AdaLoraBudget, check_variant, variant_fields


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    global_step: int
    final_train_loss: float | None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall clock by stage (see StageClock)


GENERATION_MARGIN = 4  # tokens beyond the longest eval label that evaluation by generation may produce


def prepare_data(plan: Plan, processor, max_label_length: int, skip_log: SkipLog | None = None):
    """(train_dataset, eval_dataset | None, report); writes `data_report.json`. With `data.streaming` the
    training split is a lazy stream (training.streaming) whose skipped rows go to `skip_log`."""
    cfg = plan.config
    report = DataReport()
    common = dict(language=plan.language, task=cfg.model.task, max_label_length=max_label_length, report=report,
                  cache_dir=cfg.data.cache_dir)
    if cfg.data.streaming:
        train_ds = stream_split(plan, processor, common, skip_log)
    else:
        examples = load_examples(cfg.data, cfg.data.train_split, report)
        packing = cfg.data.pack_utterances > 1
        train_ds = prepare_split(examples, processor, cfg.data, split=cfg.data.train_split,
                                 max_samples=cfg.data.max_train_samples, keep_audio=cfg.augment.audio_on or packing,
                                 timestamps=TimestampChoice(cfg.train.timestamp_probability, cfg.train.seed), **common)
        # speaking-rate flags: recorded in the report, the rows dropped only with data.drop_flagged
        train_ds = triage_training_split(train_ds, examples, cfg.data, report, cfg.data.train_split)
        if packing:  # after triage: the clips are checked one by one, then packed into windows
            train_ds = pack_split(train_ds, processor, cfg.data, seed=cfg.train.seed, split=cfg.data.train_split,
                                  **common)
        if cfg.augment.audio_on:
            train_ds = augmented(train_ds, cfg.augment, processor.feature_extractor, seed=cfg.train.seed,
                                 max_duration_s=cfg.data.max_duration_s)
    if cfg.augment.enabled:
        report.augmentation[cfg.data.train_split] = cfg.augment.settings()
    eval_ds = None
    if cfg.data.eval_split and cfg.train.eval_strategy != "no":
        data = unstreamed(cfg.data)
        eval_ds = prepare_split(load_examples(data, cfg.data.eval_split, report), processor, data,
                                split=cfg.data.eval_split, max_samples=cfg.data.max_eval_samples, **common)
    if is_main():
        report.write(plan.run_dir / REPORT_FILENAME)
        print(report.summary_line())
        print(report.flag_line(cfg.data.train_split))  # "not run" for a streamed split
    if not cfg.data.streaming and len(train_ds) == 0:
        raise UserError(f"{cfg.data.path}: no usable training examples ({report.summary_line()})")
    return train_ds, eval_ds, report


def make_compute_metrics(processor, language: str | None):
    """WER/CER of generated ids against labels (-100 mapped back to padding)."""
    tok = processor.tokenizer

    def compute(pred) -> dict[str, float]:
        preds = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        preds = np.where(preds < 0, tok.pad_token_id, preds)
        labels = np.where(pred.label_ids == -100, tok.pad_token_id, pred.label_ids)
        hyps = tok.batch_decode(preds, skip_special_tokens=True)
        refs = tok.batch_decode(labels, skip_special_tokens=True)
        return error_rates(refs, hyps, language)

    return compute


def write_adapter(model, processor, adapter_dir: Path, plan: Plan) -> None:
    """Final adapter + processor files + whispertune.json (loads with PeftModel.from_pretrained)."""
    cfg = plan.config
    model.save_pretrained(adapter_dir)
    base_fields = write_portable_files(adapter_dir, base_name=cfg.model.name_or_path, base_path=plan.model_path,
                                       processor=processor, language=plan.language, task=cfg.model.task)
    meta = {
        "base_model": cfg.model.name_or_path,  # as written (an embedded: name stays portable)
        **base_fields,
        "revision": cfg.model.revision,
        "language": plan.language,
        "language_name": plan.language_name,
        "task": cfg.model.task,
        "quantization": cfg.quantization.mode,
        "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "target_modules": cfg.lora.target_modules,
                 "freeze_encoder": cfg.train.freeze_encoder, **variant_fields(cfg.lora, cfg.train.max_steps)},
        "whispertune_version": __version__,
    }
    (adapter_dir / ADAPTER_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def _with_cached_encoder(plan: Plan, model, train_ds, eval_ds):
    """Frozen encoder: encode each clip once; the collator then passes `encoder_outputs`."""
    common = dict(model_dir=plan.model_path, quantization=plan.config.quantization.mode,
                  cache_dir=plan.encoder_cache_dir, batch_size=plan.encode_batch_size,
                  cross_kv=plan.config.train.cache_cross_attention)
    train_ds = cached_dataset(model, train_ds, desc="encoding train", **common)
    if eval_ds is not None:
        eval_ds = cached_dataset(model, eval_ds, desc="encoding eval", **common)
    return train_ds, eval_ds


def _generation_order(eval_ds, limit: int):
    """(eval set longest clip first, generation max length) for evaluation by generation.

    Longest first: the utterances of one generated batch then end at similar lengths. The max length is
    the longest label (prefix and end token included) plus GENERATION_MARGIN, capped at `limit`: a model
    that has learned anything stops at its end token well before, and one that loops stops there instead
    of at `limit`, which decoding every clip to would cost most of an evaluation.
    """
    longest = max(len(labels) for labels in eval_ds["labels"])
    if "duration" in eval_ds.column_names:
        eval_ds = eval_ds.sort("duration", reverse=True)
    return eval_ds, min(limit, longest + GENERATION_MARGIN)


def train(cfg: Config | Plan, *, resume: bool | str | None = None, overwrite: bool = False,
          extra_callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    """Fine-tune LoRA adapters on the configured base and data; see the module docstring for outputs.

    `cfg`: a Config, or the Plan already resolved from one (`resolve_plan`, as the demo does).
    `resume`: True = newest loadable checkpoint of this run, a path = that checkpoint. A run directory that
    holds another run is refused unless `overwrite` (whispertune.training.run_dir); one process at a time uses it.
    `extra_callbacks`: more `TrainerCallback`s (progress displays, early stopping).
    """
    if launched_world_size() > 1:
        rank_state()  # the process group, before rank 0 claims the run directory for every rank
    plan = cfg if isinstance(cfg, Plan) else resolve_plan(cfg)
    check_distributed(plan)
    check_variant(plan)
    cfg, run_dir = plan.requested, plan.run_dir

    def claim_run() -> str | None:
        identity = RunIdentity.of(cfg, data_fingerprint(cfg.data), launched_world_size())
        claim(run_dir, identity, resuming=resume not in (None, False), overwrite=overwrite)
        return resolve_resume(run_dir / "checkpoints", resume)  # before any loading

    # Rank 0 holds the lock for all ranks: the others would find it taken.
    with RunLock(run_dir) if is_main() else contextlib.nullcontext():
        resume_from = on_main_then_shared(claim_run)
        if resume_from:
            check_lora_matches(resume_from, cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules, cfg.lora.variant)
            done = finished_at(resume_from, cfg.train.max_steps, cfg.train.num_epochs)
            if done is not None and (run_dir / "adapter").is_dir():
                print(f"{run_dir}: this run already finished at step {done} (adapter/ written); nothing to do")
                return _finished_result(run_dir, done)
        return _train(plan, resume_from, extra_callbacks)


def _finished_result(run_dir: Path, step: int) -> TrainResult:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")) if (run_dir / "metrics.json").is_file() else {}
    log = run_dir / "train_log.jsonl"
    history = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
    return TrainResult(run_dir=run_dir, adapter_dir=run_dir / "adapter", global_step=step,
                       final_train_loss=metrics.get("final_train_loss"), log_history=history,
                       eval_metrics=metrics.get("eval", {}))


def _train(plan: Plan, resume_from: str | None, extra_callbacks) -> TrainResult:
    cfg, run_dir, preset = plan.config, plan.run_dir, plan.preset
    ckpt_root = run_dir / "checkpoints"
    compiled = preset is not None and preset.compile_layers
    log_path = run_dir / "train_log.jsonl"
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ckpt_root / STAGING, ignore_errors=True)  # a checkpoint interrupted mid-write
        write_file_atomically(run_dir / "config.yaml", cfg.to_yaml())
        if resume_from:
            trim_log(log_path, checkpoint_step(Path(resume_from)) or 0)
        else:
            log_path.unlink(missing_ok=True)
            (run_dir / SKIP_LOG_FILENAME).unlink(missing_ok=True)

    clock = StageClock()
    # seeded before the adapters are created: LoRA's A matrices are initialised randomly
    set_seed(cfg.train.seed)
    processor = load_processor(plan.model_path, plan.language, cfg.model.task, revision=cfg.model.revision,
                               token=cfg.model.token)
    model = load_base(plan.model, cfg.quantization, for_training=True, device=plan.device, dtype=plan.weight_dtype)
    if cfg.augment.spec_on:
        enable_spec_augment(model.config, cfg.augment)
    clock.lap("load_model")
    skip_log = SkipLog(run_dir / SKIP_LOG_FILENAME) if cfg.data.streaming else None
    with main_first():  # rank 0 fills the features cache, the other ranks read it
        train_ds, eval_ds, report = prepare_data(plan, processor, model.config.max_target_positions, skip_log)
    clock.lap("prepare_data")
    prepare_for_training(model, gradient_checkpointing=cfg.train.gradient_checkpointing,
                         prepare_kbit=cfg.train.prepare_kbit)
    model = add_lora(model, cfg.lora, freeze_encoder=cfg.train.freeze_encoder, total_steps=cfg.train.max_steps)
    adalora = AdaLoraBudget(model, resume_from) if cfg.lora.variant == "adalora" else None
    if preset is not None and preset.name != "recipe":  # the recipe is peft's k-bit preparation, done above
        model = prepare_model(model, preset)
    if cfg.train.cache_encoder_outputs:
        with main_first():  # the same for the encoder cache
            train_ds, eval_ds = _with_cached_encoder(plan, model, train_ds, eval_ds)

    # label lengths rounded up to a multiple of 8: fewer distinct shapes for the compiled decoder layers
    collator = SpeechCollator(processor, model.config.decoder_start_token_id, pad_to_multiple_of=8 if compiled else None)
    if cfg.train.cache_cross_attention:
        collator = CrossKVCollator(collator)
    gen_length = None
    if eval_ds is not None and cfg.train.predict_with_generate and not cfg.train.cache_encoder_outputs:
        eval_ds, gen_length = _generation_order(eval_ds, cfg.generation.train_generation_max_length)
    args = training_arguments(plan, has_eval=eval_ds is not None, generation_max_length=gen_length)
    trainer = AtomicCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=training_view(train_ds),
        eval_dataset=training_view(eval_ds) if eval_ds is not None else None,
        data_collator=collator,
        processing_class=processor.feature_extractor,
        compute_metrics=make_compute_metrics(processor, plan.language) if args.predict_with_generate else None,
        callbacks=callbacks(cfg, run_dir, log_path) + [clock] + list(extra_callbacks or [])
        + ([StreamReportCallback(plan, report, skip_log)] if skip_log else [])
        + ([DatasetEpoch(train_ds)] if cfg.augment.audio_on else []) + ([adalora] if adalora else []),
        max_nonfinite_steps=cfg.train.max_nonfinite_steps, adalora=adalora,
    )
    with StopOnSignal() as stop:
        trainer.add_callback(stop)
        output = trainer.train(resume_from_checkpoint=resume_from)
    if stop.signum is not None:
        raise stop.error(run_dir, trainer.state.global_step)

    adapter_dir = run_dir / "adapter"
    history = trainer.state.log_history
    if not is_main():
        return TrainResult(run_dir=run_dir, adapter_dir=adapter_dir, global_step=trainer.state.global_step,
                           final_train_loss=None, log_history=history)
    write_dir_atomically(adapter_dir, lambda d: write_adapter(model, processor, d, plan))
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    eval_metrics = {k: v for k, v in (evals[-1] if evals else {}).items() if k.startswith("eval_")}
    losses = [h["loss"] for h in history if "loss" in h]
    metrics = {"global_step": trainer.state.global_step, "train": output.metrics, "eval": eval_metrics,
               "final_train_loss": losses[-1] if losses else None, "precision": plan.precision, "device": plan.device,
               "seconds": {k: round(v, 2) for k, v in clock.seconds.items()}}
    if cfg.train.select_best != "no":  # adapter/ holds this checkpoint's weights (the Trainer loaded them at the end)
        metrics["best"] = best_record(trainer.state, cfg.train.select_best)
    write_file_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_card(adapter_dir)  # after metrics.json: the card shows the measured WER

    plot_loss(history, run_dir / "loss.png")
    return TrainResult(run_dir=run_dir, adapter_dir=adapter_dir, global_step=trainer.state.global_step,
                       final_train_loss=metrics["final_train_loss"], log_history=history, eval_metrics=eval_metrics,
                       seconds=dict(clock.seconds))
