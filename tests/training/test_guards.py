"""Issue 8 item 4: a NaN loss (injected by a forward hook that poisons the logits at chosen steps) is
skipped without touching the weights; a persistent one stops training with the last good checkpoint intact."""

from __future__ import annotations

import json
import traceback

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.helpers import train_overrides
from whispertune.config import load_config
from whispertune.errors import UserError
from whispertune.training.checkpoints import checkpoint_step, complete_checkpoints
from whispertune.training.guards import DEFAULT_MAX_NONFINITE_STEPS, NonFiniteGuard, NonFiniteLossError
from whispertune.training.trainer import train


class PoisonSteps(TrainerCallback):
    """Makes the logits NaN during the chosen (1-based) steps and records each step's weight change."""

    def __init__(self, bad_steps: set[int]):
        self.bad_steps = bad_steps
        self.current = 0
        self.changed: dict[int, bool] = {}
        self._before: list[torch.Tensor] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        model.get_base_model().proj_out.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        return output * float("nan") if self.current in self.bad_steps and module.training else output

    def _trainable(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters() if p.requires_grad]

    def on_step_begin(self, args, state, control, **kwargs):
        self.current = state.global_step + 1
        self._before = self._trainable()

    def on_step_end(self, args, state, control, **kwargs):
        after = self._trainable()
        self.changed[state.global_step] = any(not torch.equal(a, b) for a, b in zip(self._before, after))
        assert all(torch.isfinite(p).all() for p in after), f"non-finite weights after step {state.global_step}"


def _cfg(model_dir, data_dir, out, steps):
    cfg = load_config(None, train_overrides(model_dir, data_dir, out, "none", steps)
                      + ["train.save_steps=2", "train.report_to=[]"])
    cfg.data.eval_split = None
    return cfg


@pytest.mark.synth
def test_transient_nan_steps_are_skipped_and_counted(trainable_whisper_dir, speech_folder, tmp_path):
    poison = PoisonSteps({3, 5})
    result = train(_cfg(trainable_whisper_dir, speech_folder, tmp_path / "run", 8), extra_callbacks=[poison])
    assert result.global_step == 8
    assert poison.changed == {1: True, 2: True, 3: False, 4: True, 5: False, 6: True, 7: True, 8: True}
    logged = [json.loads(x) for x in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in logged if "loss" in e]
    assert len(losses) == 8 and all(map(lambda v: v == v and abs(v) != float("inf"), losses))
    assert [e.get("nonfinite_skipped", 0) for e in logged if "loss" in e] == [0, 0, 1, 1, 2, 2, 2, 2]
    assert result.final_train_loss < losses[0]  # training went on and still learned


@pytest.mark.synth
def test_persistent_nan_stops_with_last_good_checkpoint(trainable_whisper_dir, speech_folder, tmp_path):
    run = tmp_path / "run"
    poison = PoisonSteps(set(range(6, 100)))  # from step 6 on, every step is NaN
    with pytest.raises(NonFiniteLossError) as info:
        train(_cfg(trainable_whisper_dir, speech_folder, run, 12), extra_callbacks=[poison])
    limit = DEFAULT_MAX_NONFINITE_STEPS
    last_bad = 5 + limit
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert f"training stopped at step {last_bad}" in message and f"steps 6-{last_bad}" in message
    assert f"train.max_nonfinite_steps={limit}" in message
    assert all(not poison.changed[s] for s in range(6, last_bad + 1))

    checkpoints = complete_checkpoints(run / "checkpoints")
    assert checkpoint_step(checkpoints[-1]) <= last_bad and str(checkpoints[-1]) in message
    assert not (run / "adapter").exists()  # the run did not pretend to finish
    # the last checkpoint loads and is finite, and equals the weights of the last good step (5)
    good = load_file(checkpoints[-1] / "adapter_model.safetensors")
    assert good and all(torch.isfinite(t).all() for t in good.values())
    # checkpoints written after step 5 hold step 5's weights: the skipped steps changed nothing
    after_good = [load_file(c / "adapter_model.safetensors") for c in checkpoints if checkpoint_step(c) > 5]
    at_four = load_file(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert after_good and any(not torch.equal(after_good[0][k], at_four[k]) for k in at_four)
    for later in after_good[1:]:
        assert all(torch.equal(later[k], after_good[0][k]) for k in later)

    # a resume from it continues (here until the poison stops it again, after the same number of steps)
    poison_again = PoisonSteps(set(range(6, 100)))
    with pytest.raises(NonFiniteLossError, match="in a row"):
        train(_cfg(trainable_whisper_dir, speech_folder, run, 12), resume=True, extra_callbacks=[poison_again])


def test_guard_limit_must_be_positive():
    with pytest.raises(UserError, match="max_nonfinite_steps: got 0"):
        NonFiniteGuard(0)


class CountHostReads(TrainerCallback):
    """Counts `Tensor.item()` / `bool(tensor)` calls made by whispertune or the trainer loop while optimizer steps
    run (on a GPU each is a host sync). Model code is not counted: transformers' Whisper decoder reads one flag
    per forward itself (masking_utils.find_packed_sequence_indices), in the harness as in the product."""

    def __init__(self):
        self.per_step: list[int] = []
        self._count = 0
        self._active = False

    def install(self, monkeypatch):
        for name in ("item", "__bool__"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if self._active and any("/whispertune/" in f.filename or f.filename.endswith("/trainer.py")
                                        for f in traceback.extract_stack(limit=8)[:-1]):
                    self._count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_step_begin(self, args, state, control, **kwargs):
        self._count, self._active = 0, True

    def on_step_end(self, args, state, control, **kwargs):
        self._active = False
        self.per_step.append(self._count)


@pytest.mark.synth
def test_guard_reads_the_device_once_per_optimizer_step(trainable_whisper_dir, speech_folder, tmp_path,
                                                        monkeypatch):
    counter = CountHostReads()
    counter.install(monkeypatch)
    cfg = _cfg(trainable_whisper_dir, speech_folder, tmp_path / "run", 4)
    cfg.train.logging_steps = 100  # logging reads the loss too; that is the trainer's, once per logging step
    cfg.train.gradient_accumulation_steps = 2
    train(cfg, extra_callbacks=[counter])
    assert counter.per_step and all(n == 1 for n in counter.per_step), counter.per_step


def test_fp16_overflow_is_the_scalers_and_a_nan_loss_poisons_the_step():
    model = torch.nn.Linear(3, 2)
    guard = NonFiniteGuard(fp16_scaler=True)
    model.weight.grad = torch.full_like(model.weight, float("inf"))  # loss-scale overflow: normal under fp16
    model.bias.grad = torch.ones_like(model.bias)
    guard.after_backward(torch.tensor(2.5), model)
    assert guard.check(model) is False and guard.host_syncs == 1
    assert torch.isinf(model.weight.grad).all() and torch.equal(model.bias.grad, torch.ones(2))  # left to the scaler

    model.weight.grad = torch.ones_like(model.weight)
    model.bias.grad = torch.ones_like(model.bias)
    guard.after_backward(torch.tensor(float("nan")), model)  # poisons on the device, without reading the flag
    assert guard.host_syncs == 1 and torch.isnan(model.weight.grad).all() and torch.isnan(model.bias.grad).all()
    assert guard.check(model) is True and guard.host_syncs == 2


def test_bf16_or_fp32_nonfinite_gradient_discards_the_step():
    model = torch.nn.Linear(3, 2)
    guard = NonFiniteGuard()
    model.weight.grad = torch.ones_like(model.weight)
    model.bias.grad = torch.tensor([1.0, float("nan")])
    guard.after_backward(torch.tensor(0.7), model)  # finite loss, NaN gradient
    assert guard.check(model) is True
    assert model.weight.grad is None and model.bias.grad is None
    model.weight.grad, model.bias.grad = torch.ones_like(model.weight), torch.ones_like(model.bias)
    guard.after_backward(torch.tensor(0.7), model)
    assert guard.check(model) is False and torch.equal(model.bias.grad, torch.ones(2))
