"""Augmentation under data parallelism: every rank augments with the epoch that is running. Each item's seed is
its global index and the epoch; accelerate's DataLoader does not hand the epoch to the dataset there (its sampler
sits in a BatchSamplerShard), so the Trainer callback `DatasetEpoch` does. A real torchrun run of two CPU ranks."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_two_ranks, train_overrides

pytestmark = pytest.mark.synth

# Run by each rank: train() with a callback that records the dataset's epoch at every step.
RANK_SCRIPT = """
import json, os, sys
from transformers import TrainerCallback
from whispertune.config import load_config
from whispertune.training.trainer import train

class EpochSeen(TrainerCallback):
    epochs = []

    def on_step_end(self, args, state, control, train_dataloader=None, **kwargs):
        self.epochs.append(train_dataloader.dataset.epoch)

train(load_config(None, json.loads(sys.argv[1])), extra_callbacks=[EpochSeen()])
with open(os.path.join(sys.argv[2], f"epochs-{os.environ['RANK']}.json"), "w") as fh:
    json.dump(EpochSeen.epochs, fh)
"""


def test_every_rank_augments_with_the_running_epoch(trainable_whisper_dir, speech_folder, tmp_path):
    # 6 clips, 2 ranks x 3: one step an epoch
    flags = train_overrides(trainable_whisper_dir, speech_folder, tmp_path / "run", "none", 3) + [
        "train.save_strategy=no", "train.report_to=[]", "train.eval_strategy=no", "data.eval_split=null",
        "train.dataloader_num_workers=0", "augment.enabled=true", "augment.noise_prob=1"]
    run_two_ranks(RANK_SCRIPT, flags, tmp_path)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"epochs-{rank}.json").read_text()) == [0, 1, 2], rank
