"""The Hugging Face Trainer callback, in real (tiny, CPU, sub-second) training runs.

The model is built from a config (nothing is downloaded): the reference network inside a
``PreTrainedModel`` whose ``forward(x, labels)`` returns a ``ModelOutput`` with ``.loss``,
fed by the Trainer's default collator with dict batches ``{"x": ..., "labels": ...}``.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import ModelOutput

import scalecheck
from scalecheck.integrations.transformers import ScaleCheckCallback
from scalecheck.reference import interpolation as ref

STEPS = 8


@pytest.fixture(autouse=True)
def _global_rng_restored():
    """Trainer(...) calls transformers.set_seed(args.seed), which reseeds the global random,
    numpy and torch generators; give the rest of the suite its states back."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


class InterpolationConfig(PretrainedConfig):
    model_type = "scalecheck-interpolation"

    def __init__(self, hidden_size: int = 10, **kwargs) -> None:
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


@dataclass
class InterpolationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class InterpolationModel(PreTrainedModel):
    config_class = InterpolationConfig

    def __init__(self, config: InterpolationConfig) -> None:
        super().__init__(config)
        self.net = ref.make_model(hidden_size=config.hidden_size, seed=0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        out = self.net(x)
        loss = F.mse_loss(out, labels) if labels is not None else None
        return InterpolationOutput(loss=loss, logits=out)


class DictDataset(torch.utils.data.Dataset):
    """The reference data as the dicts a Hugging Face dataset yields."""

    def __init__(self, standardized: bool, n: int = 256) -> None:
        self.x, self.y = ref.make_loader(n=n, standardized=standardized).dataset.tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def arguments(tmp_path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=STEPS,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )


def train(callback, *, standardized: bool, tmp_path) -> Trainer:
    model = InterpolationModel(InterpolationConfig())
    trainer = Trainer(
        model=model,
        args=arguments(tmp_path),
        train_dataset=DictDataset(standardized),
        callbacks=[callback],
    )
    trainer.train()
    return trainer


def test_raw_reference_case_is_reported_and_stopped(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    trainer = train(callback, standardized=False, tmp_path=tmp_path)
    report = callback.report
    assert report is not None
    assert report.verdict is scalecheck.Verdict.STALLING
    assert "SC101" in report.codes()
    assert report.loss.description.startswith("the model's own loss (output.loss)")
    assert report.loss.baseline is not None  # the labels give the baseline
    assert callback.stopped
    # The Trainer looks at should_training_stop only after a step.
    assert trainer.state.global_step == 1
    text = out.getvalue()
    assert text.startswith("scalecheck: STALLING")
    assert "stopping training at global step 0" in text


def test_raw_reference_case_is_reported_without_stopping_by_default(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stream=out, trial=False)
    trainer = train(callback, standardized=False, tmp_path=tmp_path)
    assert callback.report.verdict is scalecheck.Verdict.STALLING
    assert not callback.stopped
    assert trainer.state.global_step == STEPS
    assert "scalecheck: STALLING" in out.getvalue()


def test_standardized_case_is_not_reported_nor_stopped(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    trainer = train(callback, standardized=True, tmp_path=tmp_path)
    assert callback.report.verdict is scalecheck.Verdict.OK
    assert not callback.report.at_least("warning")
    assert not callback.stopped
    assert trainer.state.global_step == STEPS
    assert out.getvalue() == ""


def test_only_the_main_process_prints(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "is_world_process_zero", lambda self: False)
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    trainer = train(callback, standardized=False, tmp_path=tmp_path)
    assert not trainer.state.is_world_process_zero
    assert callback.report.verdict is scalecheck.Verdict.STALLING  # computed here too
    assert callback.stopped
    assert out.getvalue() == ""


def test_model_is_diagnosed_in_training_mode_and_its_modes_restored(tmp_path):
    model = InterpolationModel(InterpolationConfig()).eval()
    model.net.activation.train()  # a mixed state, restored exactly
    before = {name: m.training for name, m in model.named_modules()}
    loader = torch.utils.data.DataLoader(DictDataset(standardized=True, n=32), batch_size=4)
    callback = ScaleCheckCallback(stream=io.StringIO(), trial=False)
    control = callback.on_train_begin(
        arguments(tmp_path),
        TrainerState(),
        TrainerControl(),
        model=model,
        train_dataloader=loader,
    )
    assert isinstance(control, TrainerControl) and not control.should_training_stop
    assert callback.report.measurements.training is True
    assert {name: m.training for name, m in model.named_modules()} == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"show": "loud"}, "show must be one of"),
        ({"max_batch": 2}, "Did you mean 'max_batches'"),
    ],
)
def test_invalid_options_are_rejected_when_constructed(kwargs, match):
    with pytest.raises(scalecheck.InvalidArgumentError, match=match):
        ScaleCheckCallback(**kwargs)


def test_accelerate_loader_state_is_left_alone(tmp_path):
    # The Trainer's loader is accelerate's DataLoaderShard, which registers itself in the
    # shared GradientState at each iteration and unregisters only at its end; the callback
    # reads a few batches, so it iterates the wrapped DataLoader instead.
    model = InterpolationModel(InterpolationConfig())
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=DictDataset(False))
    loader = trainer.get_train_dataloader()
    if not hasattr(loader, "base_dataloader"):
        loader = trainer.accelerator.prepare(loader)
    assert type(loader).__name__ == "DataLoaderShard"
    state = trainer.accelerator.gradient_state
    before = list(state.dataloader_references)
    callback = ScaleCheckCallback(stream=io.StringIO(), trial=False, max_batches=4)
    callback.on_train_begin(
        trainer.args, TrainerState(), TrainerControl(), model=model, train_dataloader=loader
    )
    assert callback.report.meta["max_batches"] == 4
    assert callback.report.verdict is scalecheck.Verdict.STALLING
    assert list(state.dataloader_references) == before
    assert not state.in_dataloader


def test_stops_when_another_process_finds_it_stalling(tmp_path, monkeypatch):
    # Two processes disagree: this one's verdict is ok, the other's (simulated by the
    # collective's answer) is stalling. Every process must stop, or the others would wait
    # for it in the next gradient all-reduce.
    from scalecheck.integrations import transformers as integration

    asked = []

    def other_process_stalls(flag, device=None):
        asked.append(flag)
        return True

    monkeypatch.setattr(integration, "any_process", other_process_stalls)
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    loader = torch.utils.data.DataLoader(DictDataset(standardized=True, n=32), batch_size=4)
    control = callback.on_train_begin(
        arguments(tmp_path),
        TrainerState(),
        TrainerControl(),
        model=InterpolationModel(InterpolationConfig()),
        train_dataloader=loader,
    )
    assert asked == [False]  # this process's own answer
    assert callback.report.verdict is scalecheck.Verdict.OK
    assert control.should_training_stop and callback.stopped
    assert out.getvalue().startswith("scalecheck: OK")
    assert "another process found the verdict stalling" in out.getvalue()
