"""Streaming training (`data.streaming: true`): the training split read lazily, never stored whole.

Rows come from a Hub-style dataset opened with `streaming=True` (a Hub id, or a local folder of parquet
shards: `data.source: hub`, `data.path: /data/shards`), pass a seeded shuffle buffer
(`data.shuffle_buffer`), and get their features computed on the fly where the DataLoader reads them: in its
worker processes (`train.dataloader_num_workers`). Under data parallelism each rank reads its own shards
(accelerate shards a stream of at least as many shards as ranks, and otherwise gives each rank its slice of
every global batch), with batches not dispatched from rank 0. Evaluation reads its split whole, not streamed.

Skipped rows are appended to `data_skips.jsonl` as they pass (`data.report.SkipLog`), and rank 0 rewrites
`data_report.json` from it at every checkpoint and at the end: rows kept = rows trained on so far.

Resume: the Trainer replays the stream up to the checkpoint's step and drops the batches it already trained
on (the same seeded order), so no row is trained twice or skipped; those rows are read and featurized again.
"""

from __future__ import annotations

import copy
import dataclasses

from transformers import TrainerCallback

from ..data.features import prepare_split
from ..data.report import REPORT_FILENAME, DataReport, SkipLog
from ..data.sources import load_examples
from ..data.timestamps import TimestampChoice
from .distributed import is_main, launched_world_size
from .plan import Plan


def stream_split(plan: Plan, processor, common: dict, skip_log: SkipLog):
    """The training split as a shuffled, lazily featurized IterableDataset (nothing is read yet)."""
    cfg = plan.config
    rows = load_examples(cfg.data, cfg.data.train_split, DataReport())
    rows = rows.shuffle(seed=cfg.train.seed, buffer_size=cfg.data.shuffle_buffer)
    # a scratch report: the rows are counted where they are read (workers), through the skip log
    return prepare_split(rows, processor, cfg.data, split=cfg.data.train_split, max_samples=cfg.data.max_train_samples,
                         **{**common, "report": DataReport()}, skip_log=skip_log,
                         timestamps=TimestampChoice(cfg.train.timestamp_probability, cfg.train.seed))


def unstreamed(data):
    """The data config that reads the evaluation split whole (cached features, sorted generation)."""
    return dataclasses.replace(data, streaming=False)


class StreamReportCallback(TrainerCallback):
    """Rewrite `data_report.json` (rank 0) at each checkpoint and at the end: the splits prepared whole as
    they were, the streamed training split from the skip log, kept = rows trained on so far."""

    def __init__(self, plan: Plan, report: DataReport, skip_log: SkipLog):
        self.plan, self.report, self.skip_log = plan, report, skip_log
        t = plan.config.train
        self.global_batch = t.per_device_batch_size * t.gradient_accumulation_steps * launched_world_size()

    def write(self, step: int) -> DataReport:
        report = copy.deepcopy(self.report)
        self.skip_log.count_into(report, self.plan.config.data.train_split, kept=step * self.global_batch)
        if is_main():
            report.write(self.plan.run_dir / REPORT_FILENAME)
        return report

    def on_save(self, args, state, control, **kwargs):
        self.write(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if is_main():
            print(f"data: {self.write(state.global_step).summary_line()}")
