"""The PyTorch Lightning callback, in real (tiny, CPU, sub-second) training runs."""

from __future__ import annotations

import io

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import SingleDeviceStrategy

import scalecheck
from scalecheck.integrations.lightning import ScaleCheckCallback
from scalecheck.reference import interpolation as ref

pytestmark = [
    # Lightning 2.6 itself uses torch's deprecated pytree LeafSpec check, which torch 2.13
    # reports as a FutureWarning inside Trainer.fit (not caused by scalecheck).
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # On machines with more than two cores Lightning suggests loader workers; these tests
    # use num_workers=0 on purpose (tiny in-memory data, deterministic order).
    pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers"),
    # On a machine with a GPU Lightning warns that it is not used: these trainers run on
    # the CPU on purpose (accelerator="cpu"), to give the same results everywhere.
    pytest.mark.filterwarnings("ignore:GPU available but not used"),
]

STEPS = 8


class Interpolation(pl.LightningModule):
    """The reference network, trained the reference way (MSE, Adam)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ref.make_model(seed=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class NotRankZero(SingleDeviceStrategy):
    """A single-device strategy that reports being a process other than global rank 0."""

    @property
    def is_global_zero(self) -> bool:
        return False


class AnotherRankStalls(SingleDeviceStrategy):
    """A strategy whose reduction answers as if another rank had found the run stalling."""

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        self.asked = (decision, all)
        return True


def fit(callback, *, standardized: bool, tmp_path, strategy=None) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy if strategy is not None else "auto",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(Interpolation(), ref.make_loader(n=256, standardized=standardized))
    return trainer


def test_raw_reference_case_is_reported_and_stopped(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    trainer = fit(callback, standardized=False, tmp_path=tmp_path)
    assert callback.report is not None
    assert callback.report.verdict is scalecheck.Verdict.STALLING
    assert "SC101" in callback.report.codes()
    assert callback.stopped
    assert trainer.global_step == 0  # stopped before the first optimizer step
    text = out.getvalue()
    assert text.startswith("scalecheck: STALLING")
    assert "unscaled-input-feature" in text
    assert "stopping training at global step 0" in text


def test_raw_reference_case_is_reported_without_stopping_by_default(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stream=out, trial=False)
    trainer = fit(callback, standardized=False, tmp_path=tmp_path)
    assert callback.report.verdict is scalecheck.Verdict.STALLING
    assert not callback.stopped
    assert trainer.global_step == STEPS
    assert "scalecheck: STALLING" in out.getvalue()
    assert "stopping training" not in out.getvalue()


def test_standardized_case_is_not_reported_nor_stopped(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    trainer = fit(callback, standardized=True, tmp_path=tmp_path)
    assert callback.report.verdict is scalecheck.Verdict.OK
    assert callback.report.findings == ()
    assert not callback.stopped
    assert trainer.global_step == STEPS
    assert out.getvalue() == ""


def test_every_rank_computes_but_only_rank_zero_prints(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    trainer = fit(
        callback, standardized=False, tmp_path=tmp_path, strategy=NotRankZero(device="cpu")
    )
    assert not trainer.is_global_zero
    assert callback.report.verdict is scalecheck.Verdict.STALLING  # computed here too
    assert callback.stopped and trainer.global_step == 0  # and stops with the others
    assert out.getvalue() == ""  # but prints nothing


def test_stops_with_the_other_ranks(tmp_path):
    out = io.StringIO()
    callback = ScaleCheckCallback(stop_on_stalling=True, stream=out, trial=False)
    strategy = AnotherRankStalls(device="cpu")
    trainer = fit(callback, standardized=True, tmp_path=tmp_path, strategy=strategy)
    assert strategy.asked == (False, False)  # this rank's answer, reduced with "any"
    assert callback.report.verdict is scalecheck.Verdict.OK
    assert callback.stopped and trainer.global_step == 0
    assert "another process found the verdict stalling" in out.getvalue()


def test_loader_and_get_model_options(tmp_path):
    out = io.StringIO()
    seen = []

    def pick(module):
        seen.append(module)
        return module.net

    callback = ScaleCheckCallback(
        show="always",
        stream=out,
        get_model=pick,
        loader=ref.make_loader(n=64, standardized=True),
        trial=False,
        max_batches=4,
    )
    fit(callback, standardized=False, tmp_path=tmp_path)
    assert isinstance(seen[0], Interpolation)
    assert callback.report.meta["model"] == "Interpolate"
    assert callback.report.verdict is scalecheck.Verdict.OK  # the loader given, not the trainer's
    assert out.getvalue().startswith("scalecheck: OK")  # show="always" prints an ok report too


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"show": "sometimes"}, "show must be one of"),
        ({"stop_on_stalling": "yes"}, "stop_on_stalling must be True or False"),
        ({"trail": False}, "Did you mean 'trial'"),
        ({"get_model": "net"}, "get_model must be a callable"),
        ({"stream": 3}, "stream must be a text stream"),
    ],
)
def test_invalid_options_are_rejected_when_constructed(kwargs, match):
    with pytest.raises(scalecheck.InvalidArgumentError, match=match):
        ScaleCheckCallback(**kwargs)


def test_several_training_loaders_need_a_choice(tmp_path):
    callback = ScaleCheckCallback(trial=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )

    class TwoLoaders(Interpolation):
        def training_step(self, batch, batch_idx):
            return F.mse_loss(self(batch["a"][0]), batch["a"][1])

    loaders = {"a": ref.make_loader(n=16), "b": ref.make_loader(n=16)}
    with pytest.raises(scalecheck.InvalidArgumentError, match="2 training loaders"):
        trainer.fit(TwoLoaders(), loaders)


def test_standalone_pytorch_lightning_flavour(tmp_path):
    import pytorch_lightning as ptl

    from scalecheck.integrations.pytorch_lightning import ScaleCheckCallback as PTLCallback

    class PTLInterpolation(ptl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = ref.make_model(seed=0)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    out = io.StringIO()
    callback = PTLCallback(stop_on_stalling=True, stream=out, trial=False)
    assert isinstance(callback, ptl.Callback)
    trainer = ptl.Trainer(
        accelerator="cpu",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(PTLInterpolation(), ref.make_loader(n=256))
    assert callback.report.verdict is scalecheck.Verdict.STALLING
    assert callback.stopped and trainer.global_step == 0
    assert "scalecheck: STALLING" in out.getvalue()
