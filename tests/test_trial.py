"""The A/B training trial (issue 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import scalecheck
from scalecheck.reference import interpolation as ref
from scalecheck.trial import MIN_STEPS, FunctionalAdam, TrialOptions


def test_functional_adam_matches_torch_adam_step_for_step():
    g = torch.Generator().manual_seed(0)
    a = [
        torch.randn(5, 3, generator=g, requires_grad=True),
        torch.randn(4, generator=g, requires_grad=True),
    ]
    b = [t.detach().clone().requires_grad_() for t in a]
    ours, theirs = FunctionalAdam(b, lr=0.01), torch.optim.Adam(a, lr=0.01)
    for _ in range(30):
        grads = [torch.randn(t.shape, generator=g) for t in a]
        for t, grad in zip(a, grads, strict=True):
            t.grad = grad.clone()
        for t, grad in zip(b, grads, strict=True):
            t.grad = grad.clone()
        theirs.step()
        ours.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-7)


def test_trial_is_skipped_when_inputs_are_well_scaled():
    report = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(standardized=True), strict=True
    )
    assert report.trial is None


def test_trial_is_skipped_without_targets():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh())
    report = scalecheck.diagnose(
        model, [torch.randn(8, 2, generator=g) * 1e4 for _ in range(3)], strict=True
    )
    assert report.loss.kind == "surrogate" and report.trial is None


def test_time_budget_stops_all_arms_at_the_same_step():
    options = TrialOptions(steps=10_000, budget_s=0.2)
    report = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(), trial=options, strict=True
    )
    trial = report.trial
    assert trial.budget_exhausted and 0 < trial.steps < 10_000
    assert {len(a.losses) for a in trial.arms} == {trial.steps}
    assert trial.conclusive == (trial.steps >= MIN_STEPS)


def test_a_trial_cut_short_draws_no_conclusion():
    options = TrialOptions(steps=10_000, budget_s=0.0)  # stops after its first step
    report = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(), trial=options, strict=True
    )
    trial = report.trial
    assert trial.steps == 1 and not trial.conclusive
    assert not trial.raw_trains and not trial.rescaled_helps
    assert not {"SC410", "SC411"} & set(report.codes())
    assert report.verdict == scalecheck.Verdict.STALLING  # the static evidence still holds
    assert "inconclusive" in str(report)


def test_user_optimizer_factory_is_used_once_per_arm():
    made = []

    def factory(params):
        made.append(len(params))
        return torch.optim.SGD(params, lr=0.05)

    options = TrialOptions(steps=40, optimizer=factory)
    report = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(), trial=options, strict=True
    )
    assert made == [4, 4]  # raw and standardized, each with the 4 parameter tensors
    assert report.trial.optimizer == "custom optimizer"
    assert all(a.lr is None for a in report.trial.arms)


def test_trial_never_touches_the_model():
    model = ref.make_model(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scalecheck.diagnose(model, ref.make_loader(), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_log_arm_runs_for_features_spanning_decades():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        x = torch.exp(torch.randn(32, 1, generator=g) * 3 + 2)  # log-normal, ~6 decades
        y = torch.log(x) / 3 + 0.1 * torch.randn(32, 1, generator=g)
        batches.append((x, y))
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    report = scalecheck.diagnose(model, batches, strict=True)
    assert "SC103" in report.codes()
    names = [a.name for a in report.trial.arms]
    assert names == ["raw", "standardized", "log-standardized"]
    log_arm = report.trial.arm("log-standardized")
    std_arm = report.trial.arm("standardized")
    assert log_arm.final < std_arm.final  # the log transform fits a log-shaped target best
    assert report.standardizer(log=True).log_mask.tolist() == [True]


@pytest.mark.parametrize(
    "bad",
    [
        TrialOptions(steps=0),
        TrialOptions(budget_s=-1.0),
        TrialOptions(lrs=(0.1, "fast")),  # type: ignore[arg-type]
        TrialOptions(optimizer="adam"),  # type: ignore[arg-type]
    ],
)
def test_invalid_trial_options_are_explained(bad):
    with pytest.raises(scalecheck.InvalidArgumentError, match="trial"):
        scalecheck.diagnose(ref.make_model(seed=0), ref.make_loader(), trial=bad)


class _Lookup(nn.Module):
    """An embedding of sparse gradients scaled by a numeric input: its only parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 3, sparse=True)

    def forward(self, ids, x):
        return (self.emb(ids) * x.unsqueeze(1)).sum((1, 2)).unsqueeze(1)


def _lookup_batches():
    g = torch.Generator().manual_seed(5)
    return [
        (
            (torch.randint(0, 40, (16, 4), generator=g), torch.randn(16, 1, generator=g) * 1e4),
            torch.randn(16, 1, generator=g),
        )
        for _ in range(4)
    ]


@pytest.mark.parametrize("optimizer", ["built-in", "sparse-adam", "failing"])
def test_trial_with_sparse_gradients(optimizer):
    # the built-in Adam gets sparse gradients made dense; a user's optimizer gets them as
    # they are (SparseAdam refuses dense ones); an optimizer that fails on its step is
    # reported as such, not as a raw error from inside the trial
    def failing(params):
        class Failing(torch.optim.SGD):
            def step(self, closure=None):
                raise RuntimeError("no step today")

        return Failing(params, lr=0.1)

    factories = {"built-in": None, "sparse-adam": torch.optim.SparseAdam, "failing": failing}
    options = TrialOptions(steps=20, optimizer=factories[optimizer])
    model = _Lookup()
    before = model.emb.weight.detach().clone()
    if optimizer == "failing":
        with pytest.raises(scalecheck.ModelError, match="optimizer raised RuntimeError"):
            scalecheck.diagnose(model, _lookup_batches(), trial=options, strict=True)
    else:
        report = scalecheck.diagnose(model, _lookup_batches(), trial=options, strict=True)
        assert report.trial is not None and report.trial.arms
    assert torch.equal(model.emb.weight, before) and model.emb.weight.grad is None


def test_a_one_step_trial_reads_one_step():
    """A trial the budget cuts to one step (a large model on a CPU) said "1 steps"."""
    report = scalecheck.diagnose(
        ref.make_model(seed=0), ref.make_loader(), trial=TrialOptions(steps=1), strict=True
    )
    assert report.trial is not None and report.trial.steps == 1
    assert "trial (1 step, Adam" in str(report)
    assert "Training trial (1 step, Adam)" in report.to_markdown()
    assert "Training trial: 1 step of Adam per arm" in report.to_html()
