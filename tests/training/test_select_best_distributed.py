"""`train.select_best` under data parallelism: a real torchrun run of two CPU ranks (gloo). Every rank keeps the
same best checkpoint and ends on its weights; rank 0 alone writes adapter/ and metrics.json, and adapter/ is
the kept checkpoint's adapter."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.helpers import run_two_ranks, train_overrides

pytestmark = pytest.mark.synth

# Run by each rank: train() with a callback that records, once the Trainer has loaded the best checkpoint, what
# it chose and the adapter weights this rank ends with; then what train() returned there.
RANK_SCRIPT = """
import json, os, sys
from peft import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import TrainerCallback
from whispertune.config import load_config
from whispertune.training.trainer import train

out, rank = sys.argv[2], os.environ["RANK"]

class Chosen(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        with open(os.path.join(out, f"best-{rank}.json"), "w") as fh:
            json.dump({"step": state.best_global_step, "checkpoint": state.best_model_checkpoint,
                       "score": state.best_metric}, fh)
        weights = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, os.path.join(out, f"weights-{rank}.safetensors"))

result = train(load_config(None, json.loads(sys.argv[1])), extra_callbacks=[Chosen()])
with open(os.path.join(out, f"result-{rank}.json"), "w") as fh:
    json.dump({"eval_metrics": result.eval_metrics, "final_train_loss": result.final_train_loss}, fh)
"""


def test_every_rank_keeps_the_same_best_checkpoint_and_rank_0_writes_it(trainable_whisper_dir, speech_folder,
                                                                         tmp_path):
    run = tmp_path / "run"
    flags = train_overrides(trainable_whisper_dir, speech_folder, run, "none", 4) + [
        "data.eval_split=train", "train.eval_strategy=steps", "train.eval_steps=2", "train.save_steps=2",
        "train.report_to=[]", "train.dataloader_num_workers=0", "train.select_best=wer",
        "train.predict_with_generate=true", "generation.train_generation_max_length=8"]
    run_two_ranks(RANK_SCRIPT, flags, tmp_path)
    chosen = [json.loads((tmp_path / f"best-{rank}.json").read_text()) for rank in (0, 1)]
    assert chosen[0] == chosen[1] and chosen[0]["checkpoint"] == str(run / "checkpoints" / f"checkpoint-{chosen[0]['step']}")
    metrics = json.loads((run / "metrics.json").read_text())
    # each evaluation scored the 6 clips once (not the rows the sampler repeats to fill both ranks' last batch)
    evals = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if "eval_wer" in line]
    assert [e["eval_n_utterances"] for e in evals] == [6, 6]
    assert metrics["best"]["step"] == chosen[0]["step"] and metrics["best"]["score"] == pytest.approx(chosen[0]["score"])
    # adapter/ = the kept checkpoint's adapter = the weights both ranks end with
    kept = load_file(run / "checkpoints" / f"checkpoint-{chosen[0]['step']}" / "adapter_model.safetensors")
    for weights in (load_file(run / "adapter" / "adapter_model.safetensors"),
                    *(load_file(tmp_path / f"weights-{rank}.safetensors") for rank in (0, 1))):
        assert weights.keys() == kept.keys() and all((weights[k] == kept[k]).all() for k in kept)
    # rank 0 wrote the run's results; rank 1 returned before writing anything
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    assert results[0]["eval_metrics"] == metrics["eval"] and results[0]["final_train_loss"] is not None
    assert results[1] == {"eval_metrics": {}, "final_train_loss": None}
    assert f"checkpoint-{chosen[0]['step']}" in (run / "adapter" / "README.md").read_text(encoding="utf-8")
