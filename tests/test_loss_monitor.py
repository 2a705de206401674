"""The loss monitor's baselines and spreads equal a direct computation over the batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import scalecheck
from scalecheck.monitors.loss import LossMonitor


def _run(loss_fn, batches):
    monitor = LossMonitor(loss_fn, torch.device("cpu"))
    for i, (pred, target) in enumerate(batches):
        monitor.compute(pred.requires_grad_(), target, i)
    return monitor.results()


def _regression(k=5, n=7, cols=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, cols, generator=g), torch.randn(n, cols, generator=g) * 4 + 100)
        for _ in range(k)
    ]


@pytest.mark.parametrize("loss_fn", [None, nn.MSELoss()], ids=["inferred", "MSELoss"])
def test_mse_baseline_is_the_targets_variance(loss_fn):
    batches = _regression()
    stats = _run(loss_fn, batches)
    t = np.concatenate([y.numpy() for _, y in batches]).astype(np.float64)
    p = np.concatenate([x.detach().numpy() for x, _ in batches]).astype(np.float64)
    assert stats.baseline == pytest.approx(t.var(0).mean(), rel=1e-6)
    assert stats.target_spread == pytest.approx(t.std(0).mean(), rel=1e-6)
    assert stats.prediction_spread == pytest.approx(p.std(0).mean(), rel=1e-6)
    assert [f.mean for f in stats.targets] == pytest.approx(t.mean(0).tolist(), rel=1e-6)
    assert [f.min for f in stats.targets] == pytest.approx(t.min(0).tolist())
    assert [f.count for f in stats.targets] == [len(t)] * 3


def test_summed_mse_baseline_is_per_batch():
    batches = _regression(k=4)
    stats = _run(nn.MSELoss(reduction="sum"), batches)
    t = np.concatenate([y.numpy() for _, y in batches]).astype(np.float64)
    assert stats.baseline == pytest.approx(((t - t.mean(0)) ** 2).sum() / len(batches), rel=1e-6)


def test_bce_baseline_is_the_entropy_of_the_mean_label():
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(9, 1, generator=g), (torch.rand(9, 1, generator=g) < 0.3).float())
        for _ in range(4)
    ]
    stats = _run(nn.BCEWithLogitsLoss(), batches)
    q = float(np.concatenate([y.numpy() for _, y in batches]).mean())
    assert stats.baseline == pytest.approx(-(q * math.log(q) + (1 - q) * math.log(1 - q)))


def test_cross_entropy_baseline_is_the_entropy_of_the_label_frequencies():
    g = torch.Generator().manual_seed(2)
    batches = [
        (torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(3)
    ]
    stats = _run(None, batches)
    labels = np.concatenate([y.numpy() for _, y in batches])
    freq = np.bincount(labels, minlength=4) / len(labels)
    freq = freq[freq > 0]
    assert stats.baseline == pytest.approx(-(freq * np.log(freq)).sum())


@pytest.mark.parametrize("shape", [(10, 4), (10, 4, 3, 3)], ids=["rows", "segmentation"])
def test_cross_entropy_baseline_with_class_probabilities_is_the_mean_distributions_entropy(
    shape,
):
    """Soft labels (``nn.CrossEntropyLoss`` takes class probabilities shaped like the
    scores): the best constant prediction is the mean target distribution, and its loss
    that distribution's entropy. The probabilities were cast to class ids (all 0), which
    gave a baseline of 0 that every loss 'reached'."""
    g = torch.Generator().manual_seed(3)
    batches = [
        (torch.randn(*shape, generator=g), torch.softmax(torch.randn(*shape, generator=g), 1))
        for _ in range(3)
    ]
    stats = _run(nn.CrossEntropyLoss(), batches)
    t = np.concatenate([y.numpy() for _, y in batches]).astype(np.float64)
    mean = np.moveaxis(t, 1, -1).reshape(-1, shape[1]).mean(0)
    assert stats.baseline == pytest.approx(-(mean * np.log(mean)).sum(), rel=1e-6)
    assert "mean target distribution" in stats.baseline_description


def test_a_non_finite_target_is_counted_and_left_out():
    batches = _regression(k=2)
    batches[1][1][0, 0] = math.inf
    stats = _run(None, batches)  # filterwarnings = error: a numpy warning would fail here
    t = np.concatenate([y.numpy() for _, y in batches]).astype(np.float64)
    first = t[np.isfinite(t[:, 0]), 0]
    assert stats.targets[0].nonfinite == 1 and stats.targets[0].count == len(first)
    assert stats.targets[0].std == pytest.approx(first.std(), rel=1e-6)
    assert stats.target_spread == pytest.approx(
        np.mean([first.std(), t[:, 1].std(), t[:, 2].std()]), rel=1e-6
    )


def _constant_loss(loss_fn, batches, logits):
    """*loss_fn* of one constant prediction (*logits*, broadcast to every sample) over all
    the batches' targets at once."""
    targets = torch.cat([y for _, y in batches])
    pred = logits.expand(targets.shape[0], *logits.shape[1:]).clone()
    return float(loss_fn(pred, targets))


@pytest.mark.parametrize(
    "case", ["weighted ids", "weighted probabilities", "positive weights"], ids=str
)
def test_weighted_baselines_are_the_best_constant_predictions_loss(case):
    """With class weights the best constant prediction is not the label frequencies: the
    baseline must be the loss of the best constant (checked against the criterion itself
    at that constant, and at perturbed constants, which never do better)."""
    g = torch.Generator().manual_seed(4)
    if case == "positive weights":
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0, 0.5]))
        batches = [
            (torch.randn(16, 2, generator=g), (torch.rand(16, 2, generator=g) < 0.2).float())
            for _ in range(3)
        ]
    else:
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 20.0]))
        if case == "weighted ids":
            freq = torch.tensor([0.8, 0.15, 0.05])
            batches = [
                (torch.randn(16, 3, generator=g), torch.multinomial(freq, 16, True, generator=g))
                for _ in range(3)
            ]
        else:
            batches = [
                (torch.randn(16, 3, generator=g), torch.softmax(torch.randn(16, 3, generator=g), 1))
                for _ in range(3)
            ]
    stats = _run(loss_fn, batches)
    targets = torch.cat([y for _, y in batches]).double()
    if case == "positive weights":
        y, w = targets.mean(0), loss_fn.pos_weight.double()
        q = w * y / (w * y + 1 - y)
    else:
        mass = (
            torch.bincount(targets.long(), minlength=3).double()
            if case == "weighted ids"
            else targets.sum(0)
        )
        q = loss_fn.weight.double() * mass
        q = q / q.sum()
    best = torch.logit(q) if case == "positive weights" else q.log()
    best = best.float().unsqueeze(0)
    assert stats.baseline == pytest.approx(_constant_loss(loss_fn, batches, best), rel=1e-5)
    for step in (0.1, -0.1):
        for k in range(best.shape[1]):
            moved = best.clone()
            moved[0, k] += step
            assert _constant_loss(loss_fn, batches, moved) >= stats.baseline * (1 - 1e-6)


def test_a_bce_loss_with_per_element_weights_has_no_baseline():
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(8, 1, generator=g), torch.ones(8, 1)) for _ in range(2)]
    assert _run(nn.BCEWithLogitsLoss(weight=torch.full((8, 1), 2.0)), batches).baseline is None


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.NLLLoss(),
        nn.NLLLoss(weight=torch.tensor([1.0, 3.0, 9.0])),
        nn.CrossEntropyLoss(ignore_index=1),
    ],
    ids=["NLLLoss", "weighted NLLLoss", "ignore_index"],
)
def test_nll_and_ignored_class_baselines_are_the_best_constant_predictions_loss(loss_fn):
    """``NLLLoss`` on log-probabilities has cross-entropy's baseline (it had none), and a
    class that ``ignore_index`` leaves out of the criterion's mean is left out of the
    label frequencies."""
    g = torch.Generator().manual_seed(6)
    freq = torch.tensor([0.6, 0.3, 0.1])
    batches = [
        (torch.randn(20, 3, generator=g), torch.multinomial(freq, 20, True, generator=g))
        for _ in range(3)
    ]
    stats = _run(loss_fn, batches)
    labels = torch.cat([y for _, y in batches])
    mass = torch.bincount(labels, minlength=3).double()
    if getattr(loss_fn, "ignore_index", -100) == 1:
        mass[1] = 0.0
    if loss_fn.weight is not None:
        mass = mass * loss_fn.weight.double()
    q = (mass / mass.sum()).clamp_min(1e-30)
    assert stats.baseline == pytest.approx(
        _constant_loss(loss_fn, batches, q.log().float().unsqueeze(0)), rel=1e-5
    )


def test_a_non_finite_loss_names_the_non_finite_targets():
    """A NaN target makes its batch's loss NaN. SC402 used to say only that the loss was NaN
    on some batch; it now names the target columns holding NaN or inf (the loss monitor
    counts them) and the fix drops those samples. Non-finite inputs are pointed to SC105."""
    g = torch.Generator().manual_seed(7)
    y = torch.randn(128, 2, generator=g)
    y[5, 1] = float("nan")
    y[70, 1] = float("inf")
    x = torch.randn(128, 3, generator=g)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (sc402,) = [f for f in report.findings if f.code == "SC402"]
    assert sc402.message == (
        "The loss was NaN or inf on 2 of 4 measured batches (first: batch 0): the targets "
        "hold 2 NaN or inf values (target[1]: 2)."
    )
    assert sc402.evidence["target_nonfinite"] == {"target[1]": 2}
    assert sc402.fix is not None and "torch.isfinite(y)" in sc402.fix.code
    assert "SC105" not in report.codes()

    x[3, 0] = float("nan")
    y = torch.randn(128, 2, generator=g)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (sc402,) = [f for f in report.findings if f.code == "SC402"]
    assert sc402.message.endswith("the inputs hold 1 NaN or inf value (SC105).")
    assert "SC105" in report.codes() and sc402.fix is not None and not sc402.fix.code


def _hand_written_mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((output.float() - y) ** 2).mean()


@pytest.mark.parametrize(
    "loss_fn",
    [nn.MSELoss(), F.l1_loss, nn.HuberLoss(), _hand_written_mse],
    # names, not str(): a function's str holds its address, which differs between
    # processes (pytest-xdist workers must collect the same ids)
    ids=["MSELoss", "l1_loss", "HuberLoss", "hand_written"],
)
def test_a_criterion_that_broadcasts_output_and_targets_is_sc404(loss_fn):
    """``[N, 1]`` outputs against ``[N]`` targets: the criterion compares ``[N, N]`` pairs
    and the best constant is all the model can learn. torch only warns; SC404 says it, and
    the verdict (about scale: ``ok``) names it."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(128, 3, generator=g)
    y = x.sum(1)  # [N]
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    if loss_fn is _hand_written_mse:  # torch has nothing to warn about here
        report = scalecheck.diagnose(model, batches, loss_fn=loss_fn, trial=False, strict=True)
    else:
        with pytest.warns(UserWarning, match="target size"):
            report = scalecheck.diagnose(model, batches, loss_fn=loss_fn, trial=False, strict=True)
    (sc404,) = [f for f in report.findings if f.code == "SC404"]
    assert "output of shape (32, 1) with targets of shape (32,)" in sc404.message
    assert "broadcasting them to (32, 32)" in sc404.message
    assert report.loss.broadcast == ((32, 1), (32,), (32, 32))
    assert report.verdict == scalecheck.Verdict.OK and "SC404" in report.summary
    assert scalecheck.Report.from_json(report.to_json()).loss.broadcast == report.loss.broadcast

    # the targets in the output's shape: nothing to report; nor when scalecheck infers the
    # loss (it views the targets as the output's shape and says so)
    fixed = [(xb, yb.unsqueeze(1)) for xb, yb in batches]
    report = scalecheck.diagnose(model, fixed, loss_fn=loss_fn, trial=False, strict=True)
    assert "SC404" not in report.codes()
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    assert "SC404" not in report.codes() and "were viewed as" in report.loss.description


def _classifier(last: nn.Module | None, outputs: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = [nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, outputs)]
        return nn.Sequential(*layers, *([last] if last is not None else []))


def _labelled(binary: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, :1] > 0).float() if binary else torch.randint(0, 3, (96,), generator=g)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]


@pytest.mark.parametrize(
    ("last", "loss_fn", "outputs", "function", "floor"),
    [
        (nn.Softmax(dim=1), nn.CrossEntropyLoss(), 3, "softmax", "= 0.551 for C = 3 classes"),
        (nn.Softmax(dim=1), F.cross_entropy, 3, "softmax", "= 0.551 for C = 3 classes"),
        (nn.Sigmoid(), nn.BCEWithLogitsLoss(), 1, "sigmoid", "0.313 for a positive label"),
        (nn.Softmax(dim=1), nn.NLLLoss(), 3, "softmax", "-p instead of -log p"),
    ],
    ids=["CrossEntropyLoss", "F.cross_entropy", "BCEWithLogitsLoss", "NLLLoss"],
)
def test_probabilities_into_a_loss_that_expects_logits_is_sc405(
    last, loss_fn, outputs, function, floor
):
    """The double-softmax (or double-sigmoid) bug: the criterion squashes again what the
    model already squashed. Read from the output's autograd node on the first batch."""
    binary = outputs == 1
    report = scalecheck.diagnose(
        _classifier(last, outputs), _labelled(binary), loss_fn=loss_fn, trial=False, strict=True
    )
    (sc405,) = [f for f in report.findings if f.code == "SC405"]
    assert f"comes out of a {function}" in sc405.message and floor in sc405.message
    assert report.loss.squashed_by == (function, sc405.evidence["criterion"], outputs)
    again = scalecheck.Report.from_json(report.to_json())
    assert again.loss.squashed_by == report.loss.squashed_by


def test_the_cross_entropy_floor_in_sc405_is_the_criterions_own():
    """log(1 + (C - 1)/e) is what CrossEntropyLoss gives for the most confident
    probabilities (a one-hot vector) taken as logits."""
    for classes in (2, 3, 10):
        one_hot = torch.eye(classes)
        floor = nn.CrossEntropyLoss()(one_hot, torch.arange(classes)).item()
        assert floor == pytest.approx(math.log(1 + (classes - 1) / math.e), rel=1e-6)


@pytest.mark.parametrize(
    ("last", "loss_fn"),
    [
        (None, nn.CrossEntropyLoss()),
        (nn.LogSoftmax(dim=1), nn.NLLLoss()),
        (nn.LogSoftmax(dim=1), nn.CrossEntropyLoss()),  # log_softmax is idempotent there
        (nn.Softmax(dim=1), None),  # no criterion given: nothing to compare with
    ],
    ids=["logits", "LogSoftmax+NLLLoss", "LogSoftmax+CrossEntropyLoss", "inferred"],
)
def test_logits_and_log_probabilities_are_not_sc405(last, loss_fn):
    report = scalecheck.diagnose(
        _classifier(last), _labelled(), loss_fn=loss_fn, trial=False, strict=True
    )
    assert "SC405" not in report.codes()


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda out, y: ((out.squeeze(1) - y) ** 2).mean(),
        lambda out, y: (((out - y.unsqueeze(1)) ** 2) * torch.ones(1)).mean(),
        lambda out, y: ((out - y.view(-1, 1)) ** 2).mean() + 0.0 * (out.mean() - y.mean()),
    ],
    ids=["squeezed output", "unsqueezed targets times a constant", "means of each"],
)
def test_a_hand_written_loss_with_matching_shapes_is_not_sc404(loss_fn):
    """The probe flags an operation between the output and the targets that broadcasts
    them; shapes made to match, or broadcasts with other tensors, are not flagged."""
    g = torch.Generator().manual_seed(10)
    x = torch.randn(64, 3, generator=g)
    batches = [(x[i : i + 32], x[i : i + 32].sum(1)) for i in range(0, 64, 32)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    report = scalecheck.diagnose(model, batches, loss_fn=loss_fn, trial=False, strict=True)
    assert "SC404" not in report.codes() and report.loss.broadcast is None


@pytest.mark.parametrize("binary", [False, True], ids=["softmax", "sigmoid"])
def test_an_inferred_loss_on_probabilities_takes_their_log(binary):
    """A classifier that ends in Softmax (Sigmoid), diagnosed without ``loss_fn``: the
    inferred loss is the cross-entropy of its probabilities, which equals the criterion on
    the logits before the last layer. It used to apply a second softmax (sigmoid)."""
    outputs = 1 if binary else 3
    last = nn.Sigmoid() if binary else nn.Softmax(dim=-1)
    model = _classifier(last, outputs)
    batches = _labelled(binary)
    if binary:  # integer labels, as the inference for binary classification takes them
        batches = [(x, y.long()) for x, y in batches]
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    criterion = F.binary_cross_entropy_with_logits if binary else F.cross_entropy
    with torch.no_grad():
        expected = [criterion(model[:-1](x), y.float() if binary else y) for x, y in batches]
    assert report.loss.per_batch == pytest.approx([e.item() for e in expected], rel=1e-5)
    assert "of the output's probabilities" in report.loss.description


def test_class_ids_in_a_column_are_class_ids():
    """Labels as an ``[N, 1]`` column next to ``[N, C]`` scores: the inference reads them as
    class ids (it raised "cannot infer a loss", suggesting MSELoss), and a cross-entropy
    criterion given them gets an error that says how to pass them."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(64, 4, generator=g)
    y = torch.randint(0, 3, (64, 1), generator=g)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 64, 32)]
    model = _classifier(None)
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    assert "read as class ids of shape (32,)" in report.loss.description
    with torch.no_grad():
        expected = [F.cross_entropy(model(xb), yb.view(-1)).item() for xb, yb in batches]
    assert report.loss.per_batch == pytest.approx(expected, rel=1e-6)
    freq = torch.bincount(y.view(-1), minlength=3).double() / len(y)
    assert report.loss.baseline == pytest.approx(-(freq * freq.log()).sum().item(), rel=1e-9)
    with pytest.raises(scalecheck.LossError, match=r"give it targets\.view\(-1\)"):
        scalecheck.diagnose(model, batches, loss_fn=nn.CrossEntropyLoss(), trial=False)


def test_a_loss_that_fails_under_the_broadcast_probe_runs_without_it():
    """The first batch's loss runs under SC404's shape probe (a TorchFunctionMode). A loss
    that cannot run under a mode is called again without it, so the probe never turns into
    the user's error."""
    from torch.overrides import _get_current_function_mode_stack

    def no_modes(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if _get_current_function_mode_stack():
            raise RuntimeError("this loss refuses function modes")
        return F.mse_loss(output, y)

    g = torch.Generator().manual_seed(12)
    x = torch.randn(64, 3, generator=g)
    batches = [(x[i : i + 32], x[i : i + 32, :1]) for i in range(0, 64, 32)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    report = scalecheck.diagnose(model, batches, loss_fn=no_modes, trial=False, strict=True)
    assert report.loss.value is not None and "SC404" not in report.codes()
