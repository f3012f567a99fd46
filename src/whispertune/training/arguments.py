"""How a run's plan becomes the Trainer's arguments: precision, batch sizes, workers, schedule."""

from __future__ import annotations

import os

from transformers import Seq2SeqTrainingArguments

from .plan import Plan


def dataloader_workers(requested: int, device: str) -> int:
    """`-1` (auto): 4 worker processes on a GPU, so that reading and collating the next batches overlaps
    the step; none on a CPU, where the step itself needs both cores."""
    if requested >= 0:
        return requested
    return min(4, os.cpu_count() or 1) if device.startswith("cuda") else 0


def training_arguments(plan: Plan, has_eval: bool, generation_max_length: int | None = None):
    cfg, run_dir, precision, device = plan.config, plan.run_dir, plan.precision, plan.device
    t = cfg.train
    eval_strategy = t.eval_strategy if has_eval else "no"
    workers = dataloader_workers(t.dataloader_num_workers, device)
    return Seq2SeqTrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=plan.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_steps,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps if eval_strategy == "steps" else None,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        # train.select_best (config_train_checks refuses the combinations the Trainer cannot choose under);
        # AtomicCheckpointTrainer keeps the best checkpoint's path pointing at the published directory
        load_best_model_at_end=t.select_best != "no" and has_eval,
        metric_for_best_model=f"eval_{t.select_best}" if t.select_best != "no" and has_eval else None,
        greater_is_better=False if t.select_best != "no" and has_eval else None,
        logging_steps=t.logging_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        # checkpointing is switched on by model.lora.prepare_for_training (reentrant on int8 bases only)
        gradient_checkpointing=False,
        predict_with_generate=t.predict_with_generate and has_eval,
        generation_max_length=generation_max_length or cfg.generation.train_generation_max_length,
        generation_num_beams=cfg.generation.num_beams,
        seed=t.seed,
        data_seed=t.seed,
        remove_unused_columns=t.remove_unused_columns,
        label_names=t.label_names,
        # tensorboard is added by `callbacks()` so that its logs land in <run>/logs
        report_to=[r for r in t.report_to if r != "tensorboard"],
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=device.startswith("cuda"),
        # the non-finite guard handles NaN/inf losses (AtomicCheckpointTrainer.training_step) without the
        # trainer's filter, which read every micro-batch's loss on the host
        logging_nan_inf_filter=False,
        push_to_hub=False,  # pushing is `whispertune push`, from the final adapter
        # Data parallel (torchrun): every trainable tensor (LoRA) is used in every step, so DDP need not search
        # the graph for unused ones, and the graph is the same each step: static, which suits reentrant
        # checkpointing (int8 bases) and a preset's checkpointed layers, parts of whose backward run twice.
        # Not with gradient accumulation: DDP's static graph fails in the Trainer's no_sync micro-batches
        # (an internal assert in torch 2.13's reducer, seen on gloo).
        ddp_find_unused_parameters=False,
        ddp_static_graph=t.gradient_accumulation_steps == 1,
        # a stream is read by every rank (its shards, training.streaming), not by rank 0 for all of them
        accelerator_config={"dispatch_batches": False} if cfg.data.streaming else None,
    )
