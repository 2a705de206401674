"""The calibration cases: small, deterministic setups with a known answer.

Each case is a builder returning a :class:`Setup` (model, loader, loss) together with the
verdict ``diagnose`` should reach and the reason for that label. Labels are not assumed:
:mod:`.verify` trains every case on raw and on rescaled inputs for a realistic budget and
records the numbers in :mod:`.verified`; :func:`label_from_training` turns those numbers
into the label, and ``tests/test_calibration.py`` checks that every case's ``expected``
is what its training numbers say.

The labels:

- ``stalling``: the inputs are badly scaled, the raw inputs do not learn (the best run
  over a learning-rate grid ends at >= 90% of the constant predictor's loss) while
  rescaled inputs do (<= 50% of it);
- ``at_risk``: the inputs are badly scaled, but raw training still learns (<= 50% of the
  constant predictor's loss): a normalization layer after the input, or a scale that Adam
  tolerates;
- ``ok``: the inputs the first trainable layer receives are well scaled, and rescaling is
  not what separates failure from success: healthy cases learn on raw inputs; cases with
  another bug fail with rescaled inputs too (> 50% of the constant predictor's loss).

"Badly scaled" is the project's documented yardstick (``docs/rules``, rules SC101, SC102
and SC107): some feature's ``[x, 1]`` second-moment condition number above 1e3 (for a
constant feature ``c``, whose condition number is infinite, ``c^2 + 1``, the matrix's
ratio without its flat direction), or feature stds that differ by more than 31.6x.
:mod:`.verify` records the measured condition number.

Builders never touch the global RNG: data come from ``numpy.random.default_rng(seed)``,
parameters from a local ``torch.Generator`` (modules are constructed inside
``torch.random.fork_rng`` so that their own default initialization, overwritten at once,
leaves the caller's RNG where it was).
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scalecheck import Standardizer
from scalecheck.reference import interpolation as ref

__all__ = [
    "CASES",
    "LEARNS",
    "STUCK",
    "Case",
    "Setup",
    "badly_scaled_by_yardstick",
    "get_case",
    "label_from_training",
    "training_verdict",
]

#: Raw training "does not learn" when its best final loss is at least this fraction of
#: the constant predictor's loss (the same margin as the trial's ``STUCK``).
STUCK = 0.9
#: Training "learns" when its best final loss is at most this fraction of the constant
#: predictor's loss (it at least halves it; the trial's ``LEARNS``).
LEARNS = 0.5
#: The project's yardstick for "badly scaled" (rules SC101 and SC102): a feature's
#: ``[x, 1]`` second-moment condition number above 1e3, or feature stds differing by more
#: than sqrt(1e3).
KAPPA_BAD = 1e3
STD_RATIO_BAD = math.sqrt(1e3)

BATCH = 64
N = 512


@dataclass(frozen=True)
class Setup:
    """What a user hands to ``diagnose``: a model, a loader and (optionally) a loss."""

    model: nn.Module
    loader: Iterable[Any]
    loss_fn: Callable[..., Tensor] | None = None


@dataclass(frozen=True)
class Case:
    """One known-answer case.

    Attributes:
        name: a stable identifier (also the key into :mod:`.verified`).
        group: ``reference``, ``synthetic``, ``real``, ``healthy`` or ``other-cause``.
        expected: the verdict ``diagnose`` should reach: ``stalling``, ``at_risk``, ``ok``.
        badly_scaled: whether the inputs the first trainable layer receives are badly
            scaled by the project's yardstick (see the module docs).
        why: the reason for the label, in a sentence.
        build: returns a fresh :class:`Setup`.
        user_lr: for a learning-rate bug, the user's (failing) Adam learning rate; the
            verification also trains at it.
        baseline: how the verification computes the constant predictor's loss:
            ``"auto"`` (the targets' variance for float targets, the label entropy for
            class labels) or ``"mse-flat"`` (variance of the flattened targets).
        suspect: where we expect scalecheck might get it wrong, and why (reported).
        model_standardizes: the model's first operation is a fixed standardization, so
            its first trainable layer sees well-scaled values although the raw input is
            badly scaled by the yardstick.
    """

    name: str
    group: str
    expected: str
    badly_scaled: bool
    why: str
    build: Callable[[], Setup]
    user_lr: float | None = None
    baseline: str = "auto"
    suspect: str = ""
    model_standardizes: bool = False


CASES: list[Case] = []


def case(
    group: str,
    expected: str,
    why: str,
    *,
    badly_scaled: bool,
    user_lr: float | None = None,
    baseline: str = "auto",
    suspect: str = "",
    model_standardizes: bool = False,
) -> Callable[[Callable[[], Setup]], Callable[[], Setup]]:
    """Register the decorated builder as a case named after the function."""

    def register(build: Callable[[], Setup]) -> Callable[[], Setup]:
        CASES.append(
            Case(
                name=build.__name__,
                group=group,
                expected=expected,
                badly_scaled=badly_scaled,
                why=why,
                build=build,
                user_lr=user_lr,
                baseline=baseline,
                suspect=suspect,
                model_standardizes=model_standardizes,
            )
        )
        return build

    return register


def get_case(name: str) -> Case:
    """The case called *name*."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)


def label_from_training(
    c: Case, baseline: float, raw: float | None, rescaled: float | None
) -> tuple[str | None, str]:
    """The label the training numbers justify, and why (None: they justify none).

    *raw* and *rescaled* are the best final losses (over the learning-rate grid) on raw
    and on rescaled inputs; None means every run diverged.
    """
    raw_r = math.inf if raw is None else raw / baseline
    res_r = math.inf if rescaled is None else rescaled / baseline
    if c.badly_scaled:
        if raw_r >= STUCK and res_r <= LEARNS:
            return "stalling", (
                f"raw stays at {raw_r:.3g}x the constant predictor's loss, rescaled "
                f"reaches {res_r:.3g}x"
            )
        if raw_r <= LEARNS:
            return "at_risk", f"badly scaled, yet raw training reaches {raw_r:.3g}x the baseline"
        return None, f"ambiguous: raw {raw_r:.3g}x, rescaled {res_r:.3g}x the baseline"
    if raw_r <= LEARNS:
        return "ok", f"well scaled and raw training reaches {raw_r:.3g}x the baseline"
    if res_r > LEARNS:
        return "ok", (
            f"well scaled; training fails with raw ({raw_r:.3g}x) and rescaled ({res_r:.3g}x) "
            "inputs alike: another cause"
        )
    return None, f"rescaling fixes it ({raw_r:.3g}x -> {res_r:.3g}x): not well scaled after all?"


def badly_scaled_by_yardstick(kappa: float, std_ratio: float) -> bool:
    """The project's yardstick applied to the numbers :mod:`.verify` measured."""
    return kappa > KAPPA_BAD or std_ratio > STD_RATIO_BAD


def training_verdict(c: Case, v: dict[str, Any]) -> tuple[str | None, str]:
    """:func:`label_from_training` on a :mod:`.verified` entry: the best rescaled arm
    (standardized or log-standardized) against raw; for a learning-rate bug, the two
    runs at the user's own learning rate."""
    raw = v["raw"]["best"]
    rescaled_runs = [
        v[a]["best"]
        for a in ("standardized", "log-standardized")
        if a in v and v[a]["best"] is not None
    ]
    rescaled = min(rescaled_runs) if rescaled_runs else None
    if c.user_lr is not None and "user_lr" in v:
        raw, rescaled = v["user_lr"]["raw"], v["user_lr"]["standardized"]
        if raw is None and rescaled is None:  # both diverged: equally broken
            raw = rescaled = math.inf
    return label_from_training(c, v["baseline"], raw, rescaled)


# -- building blocks ----------------------------------------------------------------------


def _init(model: nn.Module, seed: int) -> nn.Module:
    """PyTorch's default initialization, drawn from a local generator.

    Linear and convolution layers: weight and bias uniform in +-1/sqrt(fan_in) (what
    ``reset_parameters`` gives); embeddings: standard normal; normalization layers keep
    their ones and zeros.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=g)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(generator=g)
    return model


def _built(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        model = make()
    return _init(model, seed)


_ACT: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def _mlp(
    n_in: int,
    n_out: int,
    act: str = "tanh",
    *,
    hidden: int = 32,
    seed: int = 0,
    first: Callable[[], nn.Module] | None = None,
    last: Callable[[], nn.Module] | None = None,
) -> nn.Module:
    def make() -> nn.Module:
        layers: list[nn.Module] = [first()] if first is not None else []
        layers += [nn.Linear(n_in, hidden), _ACT[act](), nn.Linear(hidden, n_out)]
        if last is not None:
            layers.append(last())
        return nn.Sequential(*layers)

    return _built(make, seed)


def _batches(
    x: np.ndarray | Sequence[np.ndarray], y: np.ndarray, batch: int = BATCH
) -> list[tuple[Any, Tensor]]:
    """Split arrays into a list of ``(inputs, targets)`` batches (float32 features;
    integer arrays stay int64)."""

    def tensor(a: np.ndarray) -> Tensor:
        if np.issubdtype(a.dtype, np.integer):
            return torch.from_numpy(a.astype(np.int64))
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    xs = [x] if isinstance(x, np.ndarray) else list(x)
    n = len(y)
    out: list[tuple[Any, Tensor]] = []
    for i in range(0, n, batch):
        parts = [tensor(a[i : i + batch]) for a in xs]
        inputs: Any = parts[0] if isinstance(x, np.ndarray) else tuple(parts)
        out.append((inputs, tensor(y[i : i + batch])))
    return out


def _zscore(a: np.ndarray, axis: int = 0) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return (a - a.mean(axis=axis, keepdims=True)) / a.std(axis=axis, keepdims=True)


def _target(y: np.ndarray) -> np.ndarray:
    """A regression target as a ``[N, 1]`` column with mean 0 and std 1 (so that target
    scale never confounds an input-scale case)."""
    return _zscore(y).reshape(-1, 1)


def _smooth_target(z: np.ndarray) -> np.ndarray:
    """A smooth nonlinear function of standardized features ``z`` ``[N, k]``."""
    k = z.shape[1]
    y = np.sin(1.5 * z[:, 0])
    if k > 1:
        y = y + 0.8 * z[:, 1]
    if k > 2:
        y = y + 0.6 * z[:, 1] * z[:, 2]
    if k > 3:
        y = y - 0.5 * np.tanh(2 * z[:, 3])
    return _target(y)


def _classes(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits.argmax(axis=1), dtype=np.int64)


# -- the reference case and its variants ----------------------------------------------------

REF_N = 1024


@case(
    "reference",
    "stalling",
    "The original Q&A case: x in [255, 2e5] saturates every tanh unit; raw training stays at "
    "the targets' variance, standardized x fits the curve.",
    badly_scaled=True,
)
def reference_tanh() -> Setup:
    return Setup(ref.make_model("tanh", seed=0), ref.make_loader(n=REF_N, seed=0))


@case(
    "reference",
    "stalling",
    "The asker's sigmoid variant: the same saturation, the same plateau.",
    badly_scaled=True,
)
def reference_sigmoid() -> Setup:
    return Setup(ref.make_model("sigmoid", seed=0), ref.make_loader(n=REF_N, seed=0))


@case(
    "reference",
    "stalling",
    "The asker's ReLU variant: pre-activations of order 1e5 saturate the output softmax "
    "instead; raw training ends above the baseline.",
    badly_scaled=True,
)
def reference_relu() -> Setup:
    return Setup(ref.make_model("relu", seed=0), ref.make_loader(n=REF_N, seed=0))


@case(
    "reference",
    "ok",
    "The accepted answer applied: x standardized, the same network learns the curve.",
    badly_scaled=False,
)
def reference_standardized() -> Setup:
    loader = ref.make_loader(n=REF_N, seed=0, standardized=True)
    return Setup(ref.make_model("tanh", seed=0), loader)


# -- synthetic badly scaled inputs ----------------------------------------------------------


def _hetero_data(seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Features with stds 1e-2, 1, 1e2 and 1e4. The largest enters the target through
    ``|z3|`` only: a unit saturated by it is a step function of ``sign(z3)``, which carries
    nothing about ``|z3|``, so no part of the target is learnable by saturated units."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 4))
    scales = np.array([1e-2, 1.0, 1e2, 1e4])
    y = np.sin(1.5 * z[:, 0]) + 0.8 * z[:, 1] + 0.6 * z[:, 1] * z[:, 2] + 0.5 * np.abs(z[:, 3])
    return z * scales, _target(y)


@case(
    "synthetic",
    "stalling",
    "Four features with stds 1e-2, 1, 1e2 and 1e4 into a tanh MLP: the 1e4 feature saturates "
    "every hidden unit.",
    badly_scaled=True,
)
def heterogeneous_scales_tanh() -> Setup:
    x, y = _hetero_data()
    return Setup(_mlp(4, 1, "tanh", seed=1), _batches(x, y))


@case(
    "synthetic",
    "stalling",
    "Sensor readings on large offsets (5000 +- 10, 20000 +- 100) into a tanh MLP: the "
    "offsets push every unit into saturation.",
    badly_scaled=True,
)
def large_offsets_tanh() -> Setup:
    rng = np.random.default_rng(12)
    z = rng.standard_normal((N, 2))
    x = np.stack([5000 + 10 * z[:, 0], 20000 + 100 * z[:, 1]], axis=1)
    return Setup(_mlp(2, 1, "tanh", seed=2), _batches(x, _smooth_target(z)))


@case(
    "synthetic",
    "stalling",
    "A reading on a large offset (5000 +- 10) into a ReLU MLP with a symmetric target "
    "(|z|): every unit is dead or linear over the whole data, so the network is linear in x "
    "and its best fit is the mean; the biases would have to travel thousands of units to "
    "put a kink inside the data.",
    badly_scaled=True,
    suspect="Nothing saturates and the live units pass gradient: the stall comes from the "
    "geometry (no kink inside the data), not from a vanished gradient.",
)
def large_offset_relu() -> Setup:
    x, y = _offset_reading()
    return Setup(_mlp(1, 1, "relu", seed=24), _batches(x, y))


def _offset_reading(seed: int = 33) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 1))
    return 5000 + 10 * z, _target(np.abs(z[:, 0]))


@case(
    "synthetic",
    "stalling",
    "The same offset reading and ReLU MLP from another initialization, in which only 13 of "
    "the 32 units have a negative weight (are dead): the network is still linear in x.",
    badly_scaled=True,
    suspect="The evidence of a block is dead units, and with 13 of 32 dead the share of "
    "exactly-zero input-layer gradients stays under SC301's one half: a stall without a "
    "'blocked' finding.",
)
def large_offset_relu_fewer_dead() -> Setup:
    x, y = _offset_reading()
    return Setup(_mlp(1, 1, "relu", seed=28), _batches(x, y))


def _pixels(seed: int = 13, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """8x8 grey images with values 0..255 in four classes (a bright bar or block whose
    position is the class), with noise."""
    rng = np.random.default_rng(seed)
    templates = np.zeros((4, 8, 8))
    templates[0, :3, :] = 1  # top bar
    templates[1, :, :3] = 1  # left bar
    templates[2, 5:, :] = 1  # bottom bar
    templates[3, 2:6, 2:6] = 1  # centre block
    labels = rng.integers(0, 4, n)
    img = 40 + 160 * templates[labels] + rng.normal(0, 40, (n, 8, 8))
    return np.clip(np.round(img), 0, 255), labels.astype(np.int64)


@case(
    "synthetic",
    "at_risk",
    "0..255 pixel values fed straight into a sigmoid MLP: pre-activations of order 50 put "
    "most sigmoids where the derivative is exactly 0 (SC201 fires), but the rest pass "
    "tiny non-zero gradients that Adam rescales, so raw training learns.",
    badly_scaled=True,
    suspect="We expected a stall; training with Adam says raw inputs learn.",
)
def pixels_0_255_sigmoid() -> Setup:
    img, labels = _pixels()
    return Setup(_mlp(64, 4, "sigmoid", seed=3), _batches(img.reshape(-1, 64), labels))


def _timestamps(seed: int = 14) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = 1_672_531_200.0  # 2023-01-01T00:00:00Z
    t = start + rng.uniform(0, 365 * 86400, N)
    temp = 12 + 8 * rng.standard_normal(N)
    day = (t - start) / 86400
    y = np.sin(2 * np.pi * day / 365) + 0.5 * (temp - 12) / 8
    return np.stack([t, temp], axis=1), _target(y)


@case(
    "synthetic",
    "stalling",
    "Unix timestamps (~1.7e9 s over 2023) as a feature next to a temperature: the timestamp "
    "saturates every tanh unit, so the seasonal signal is never learned.",
    badly_scaled=True,
)
def unix_timestamps_tanh() -> Setup:
    x, y = _timestamps()
    return Setup(_mlp(2, 1, "tanh", seed=4), _batches(x, y))


def _snapshot(seed: int = 38) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    exported = 1_700_000_000.0  # the export's Unix time, the same in every row of the split
    z = rng.standard_normal((N, 2))
    x = np.concatenate([np.full((N, 1), exported), z], axis=1)
    return x, _smooth_target(z)


@case(
    "synthetic",
    "stalling",
    "A column of the export's timestamp (1.7e9 in every row) next to two standardized "
    "features: the constant shifts every tanh unit far into saturation, so the smooth target "
    "of the other two is never learned; its own condition number is infinite, so only its "
    "c^2 + 1 = 2.9e18 (rule SC107) says so.",
    badly_scaled=True,
)
def constant_timestamp_tanh() -> Setup:
    x, y = _snapshot()
    return Setup(_mlp(3, 1, "tanh", seed=12), _batches(x, y))


@case(
    "synthetic",
    "stalling",
    "The export's timestamp column (1.7e9 in every row) and two standardized features behind "
    "a LayerNorm meant to take care of scale: it normalizes each sample across the three, "
    "so the timestamp's deviation is the whole sample's spread and the two features reach "
    "the first layer as constants (rule SC108).",
    badly_scaled=True,
)
def layernorm_over_constant_timestamp() -> Setup:
    x, y = _snapshot()
    return Setup(_mlp(3, 1, "tanh", seed=12, first=lambda: nn.LayerNorm(3)), _batches(x, y))


def _prices(seed: int = 15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    price = rng.uniform(1000, 9000, N)
    rating = rng.uniform(1, 5, N)
    demand = np.exp(-(price - 1000) / 2500) * (0.5 + rating / 5)
    return np.stack([price, rating], axis=1), _target(demand)


@case(
    "synthetic",
    "stalling",
    "Prices in the thousands (1000..9000) and a 1..5 rating into a tanh MLP predicting "
    "demand: the price saturates the units.",
    badly_scaled=True,
)
def prices_in_thousands_tanh() -> Setup:
    x, y = _prices()
    return Setup(_mlp(2, 1, "tanh", seed=5), _batches(x, y))


@case(
    "synthetic",
    "at_risk",
    "The same prices into a ReLU MLP: ReLU does not saturate and Adam adapts its step to "
    "the large feature, so raw training learns.",
    badly_scaled=True,
)
def prices_in_thousands_relu() -> Setup:
    x, y = _prices()
    return Setup(_mlp(2, 1, "relu", seed=5), _batches(x, y))


def _mixed(seed: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Four binary flags (prevalence 50%, 30%, 20%, 10%) and an annual income (~6e4)."""
    rng = np.random.default_rng(seed)
    flags = (rng.uniform(size=(N, 4)) < np.array([0.5, 0.3, 0.2, 0.1])).astype(float)
    income = np.clip(rng.normal(6e4, 2e4, N), 1e4, None)
    logit = (
        1.5 * (flags[:, 0] - flags[:, 1])
        + flags[:, 2]
        - 1.5 * flags[:, 3]
        + 2 * (income - 6e4) / 2e4
    )
    labels = (logit + rng.logistic(size=N) * 0.3 > 0).astype(np.int64)
    return np.concatenate([flags, income[:, None]], axis=1), labels


@case(
    "synthetic",
    "stalling",
    "Four binary flags next to an annual income (~6e4) into a tanh classifier: the income "
    "saturates every unit and drowns the flags.",
    badly_scaled=True,
)
def mixed_binary_and_huge_tanh() -> Setup:
    x, labels = _mixed()
    return Setup(_mlp(5, 2, "tanh", seed=6), _batches(x, labels))


def _heavy_tailed(seed: int = 17) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logs = rng.normal(3.0, 1.5, (N, 2))
    x = np.exp(logs)  # counts/durations spanning about four decades
    z = (logs - 3.0) / 1.5
    y = np.tanh(1.5 * z[:, 0]) + np.sin(1.5 * z[:, 1])
    return x, _target(y)


@case(
    "synthetic",
    "at_risk",
    "Two log-normal positive features spanning four decades (counts, durations) into a tanh "
    "MLP whose target depends on their logarithms: most values are small enough for the "
    "units, and raw training learns (better than standardized, worse than log-standardized).",
    badly_scaled=True,
    suspect="Standardizing alone trains worse than raw here; only the log transform is "
    "clearly better, so the trial's comparison hinges on its log-standardized arm.",
)
def heavy_tailed_counts_tanh() -> Setup:
    x, y = _heavy_tailed()
    return Setup(_mlp(2, 1, "tanh", seed=7), _batches(x, y))


@case(
    "synthetic",
    "stalling",
    "A row-id column (0..1e6) left among three standardized features: the irrelevant huge "
    "column saturates every tanh unit, so the informative features are never used.",
    badly_scaled=True,
)
def irrelevant_id_column_tanh() -> Setup:
    rng = np.random.default_rng(18)
    z = rng.standard_normal((N, 3))
    ids = rng.permutation(1_000_000)[:N].astype(float)
    x = np.concatenate([ids[:, None], z], axis=1)
    return Setup(_mlp(4, 1, "tanh", seed=8), _batches(x, _smooth_target(z)))


@case(
    "synthetic",
    "at_risk",
    "Features of order 1e-4 (kappa ~1e8): nothing saturates and gradients flow; Adam's "
    "scale-free steps grow the weights until the input matters, so raw training learns, "
    "slowly (nothing in the first few hundred steps).",
    badly_scaled=True,
    suspect="Raw training only starts to learn after several hundred steps: a 200-step "
    "trial sees no progress on raw inputs.",
)
def tiny_scale_tanh() -> Setup:
    rng = np.random.default_rng(19)
    z = rng.standard_normal((N, 2))
    return Setup(_mlp(2, 1, "tanh", seed=9), _batches(z * 1e-4, _smooth_target(z)))


@case(
    "synthetic",
    "at_risk",
    "Three centred features with std 100 (kappa 1e4) into a ReLU MLP: a scale Adam "
    "tolerates; raw training learns.",
    badly_scaled=True,
)
def std_100_relu() -> Setup:
    rng = np.random.default_rng(20)
    z = rng.standard_normal((N, 3))
    return Setup(_mlp(3, 1, "relu", seed=10), _batches(100 * z, _smooth_target(z)))


@case(
    "synthetic",
    "at_risk",
    "0..255 pixels into a small ReLU conv net: badly scaled, but ReLU does not saturate and "
    "raw training learns the classes.",
    badly_scaled=True,
)
def pixels_0_255_relu_cnn() -> Setup:
    img, labels = _pixels()

    def make() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 4),
        )

    return Setup(_built(make, 11), _batches(img.reshape(-1, 1, 8, 8), labels))


@case(
    "synthetic",
    "at_risk",
    "The heterogeneous features (stds 1e-2 .. 1e4) behind a BatchNorm1d that normalizes "
    "them before the tanh MLP: badly scaled, yet raw training learns.",
    badly_scaled=True,
)
def batchnorm_after_input() -> Setup:
    x, y = _hetero_data()
    return Setup(_mlp(4, 1, "tanh", seed=1, first=lambda: nn.BatchNorm1d(4)), _batches(x, y))


@case(
    "synthetic",
    "at_risk",
    "0..255 pixels behind a LayerNorm over the 64 pixels before a sigmoid MLP: every pixel "
    "shares one scale, the LayerNorm removes it, raw training learns.",
    badly_scaled=True,
)
def layernorm_after_pixels() -> Setup:
    img, labels = _pixels()
    model = _mlp(64, 4, "sigmoid", seed=3, first=lambda: nn.LayerNorm(64))
    return Setup(model, _batches(img.reshape(-1, 64), labels))


# -- real data shipped inside installed packages --------------------------------------------


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the calibration corpus reads data shipped inside the {name!r} package; install "
            'the test extra: pip install -e ".[test]"'
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(package: str, *parts: str) -> Path:
    path = _package_dir(package).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the calibration corpus uses this data file shipped in the "
            f"{package} wheel."
        )
    return path


def _penguins(seed: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Palmer penguins (palmerpenguins' penguins.csv): bill length and depth (mm),
    flipper length (mm), body mass (g); the species as label. Rows with a missing value
    are dropped (342 remain), then shuffled."""
    path = _data_file("palmerpenguins", "data", "penguins.csv")
    species = {"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}
    cols = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
    rows, labels = [], []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            if any(rec[c] in ("", "NA") for c in cols):
                continue
            rows.append([float(rec[c]) for c in cols])
            labels.append(species[rec["species"]])
    order = np.random.default_rng(seed).permutation(len(rows))
    return np.asarray(rows)[order], np.asarray(labels, dtype=np.int64)[order]


@case(
    "real",
    "stalling",
    "Palmer penguins measured in mm and g (body mass ~4200) into a tanh classifier: flipper "
    "length and body mass saturate every unit.",
    badly_scaled=True,
)
def penguins_raw_tanh() -> Setup:
    x, labels = _penguins()
    return Setup(_mlp(4, 3, "tanh", hidden=16, seed=12), _batches(x, labels))


@case(
    "real",
    "at_risk",
    "The same penguins into a ReLU classifier: nothing saturates and the cross-entropy "
    "gradient flows; raw training learns the species, slowly.",
    badly_scaled=True,
    suspect="Huge logits at first; raw training needs far more than 200 steps to get "
    "below the baseline.",
)
def penguins_raw_relu() -> Setup:
    x, labels = _penguins()
    return Setup(_mlp(4, 3, "relu", hidden=16, seed=12), _batches(x, labels))


@case(
    "real",
    "ok",
    "The same penguins standardized per feature: healthy.",
    badly_scaled=False,
)
def penguins_standardized() -> Setup:
    x, labels = _penguins()
    return Setup(_mlp(4, 3, "tanh", hidden=16, seed=12), _batches(_zscore(x), labels))


def _norris(seed: int = 22) -> tuple[np.ndarray, np.ndarray]:
    """NIST StRD "Norris" (calibration of ozone monitors, shipped with scipy's tests):
    36 pairs (y, x) with x from 0.2 to 996; shuffled."""
    path = _data_file("scipy", "stats", "tests", "data", "nist_linregress", "Norris.dat")
    pairs: list[tuple[float, float]] = []
    started = False
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts[:3] == ["Data:", "y", "x"]:
            started = True
            continue
        if started and len(parts) == 2:
            pairs.append((float(parts[0]), float(parts[1])))
    data = np.asarray(pairs)
    data = data[np.random.default_rng(seed).permutation(len(data))]
    return data[:, 1:2], data[:, 0]


@case(
    "real",
    "at_risk",
    "NIST's Norris ozone-monitor calibration (x from 0.2 to 996, shipped in scipy's test "
    "data) into a tanh MLP, target standardized: x saturates most units (SC201 fires), yet "
    "raw training fits the (nearly linear) relation.",
    badly_scaled=True,
    suspect="We expected a stall (most units saturated); training says raw learns.",
)
def norris_ozone_tanh() -> Setup:
    x, y = _norris()
    return Setup(_mlp(1, 1, "tanh", hidden=16, seed=13), _batches(x, _target(y), batch=18))


def _iris(seed: int = 23) -> tuple[np.ndarray, np.ndarray]:
    """Fisher's iris (scipy's io/arff test data): four measurements in cm, three classes;
    shuffled."""
    path = _data_file("scipy", "io", "arff", "tests", "data", "iris.arff")
    classes = {"Iris-setosa": 0, "Iris-versicolor": 1, "Iris-virginica": 2}
    rows, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.upper().startswith("@DATA"):
            in_data = True
            continue
        if in_data and line and not line.startswith("%"):
            *values, name = line.split(",")
            rows.append([float(v) for v in values])
            labels.append(classes[name])
    order = np.random.default_rng(seed).permutation(len(rows))
    return np.asarray(rows)[order], np.asarray(labels, dtype=np.int64)[order]


@case(
    "real",
    "at_risk",
    "Fisher's iris in cm: sepal length (mean 5.8, std 0.83) has kappa ~1.9e3, just over the "
    "1e3 yardstick; raw training learns (standardized learns faster).",
    badly_scaled=True,
    suspect="Borderline: over the yardstick, but a scale most people call mild.",
)
def iris_cm_tanh() -> Setup:
    x, labels = _iris()
    return Setup(_mlp(4, 3, "tanh", hidden=16, seed=14), _batches(x, labels, batch=30))


# -- healthy ---------------------------------------------------------------------------------


@case("healthy", "ok", "Standardized features, tanh MLP: learns.", badly_scaled=False)
def standardized_tanh() -> Setup:
    rng = np.random.default_rng(24)
    z = rng.standard_normal((N, 4))
    return Setup(_mlp(4, 1, "tanh", seed=15), _batches(z, _smooth_target(z)))


@case(
    "healthy",
    "ok",
    "Standardized features behind a BatchNorm1d (a normalization layer after well-scaled "
    "inputs): learns.",
    badly_scaled=False,
)
def batchnorm_on_standardized() -> Setup:
    rng = np.random.default_rng(34)
    z = rng.standard_normal((N, 4))
    model = _mlp(4, 1, "tanh", seed=25, first=lambda: nn.BatchNorm1d(4))
    return Setup(model, _batches(z, _smooth_target(z)))


@case(
    "healthy",
    "ok",
    "Features uniform in [0, 10] (mean 5, std 2.9, kappa ~140): mild scales, raw training learns.",
    badly_scaled=False,
)
def mild_scales_tanh() -> Setup:
    rng = np.random.default_rng(25)
    x = rng.uniform(0, 10, (N, 3))
    return Setup(_mlp(3, 1, "tanh", seed=16), _batches(x, _smooth_target((x - 5) / 2.9)))


@case(
    "healthy",
    "ok",
    "Sparse binary indicator features (prevalence 5..30%): well conditioned (kappa < 1e2), "
    "raw training learns.",
    badly_scaled=False,
)
def sparse_binary_features() -> Setup:
    rng = np.random.default_rng(26)
    p = np.linspace(0.05, 0.3, 12)
    x = (rng.uniform(size=(N, 12)) < p).astype(float)
    w = rng.normal(0, 1.5, 12)
    labels = ((x - p) @ w + 0.2 * rng.logistic(size=N) > 0).astype(np.int64)
    return Setup(_mlp(12, 2, "tanh", seed=17), _batches(x, labels))


class _IdsAndFeatures(nn.Module):
    def __init__(self, n_ids: int = 50) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_ids, 8)
        self.net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, ids: Tensor, x: Tensor) -> Tensor:
        return self.net(torch.cat([self.emb(ids), x], dim=1))


@case(
    "healthy",
    "ok",
    "Integer category ids (0..49) into an nn.Embedding next to two standardized features: "
    "ids are not features to scale; raw training learns.",
    badly_scaled=False,
)
def embedding_ids_and_features() -> Setup:
    rng = np.random.default_rng(27)
    ids = rng.integers(0, 50, N)
    z = rng.standard_normal((N, 2))
    effect = rng.normal(0, 1, 50)
    y = _target(effect[ids] + np.sin(1.5 * z[:, 0]) + 0.5 * z[:, 1])
    return Setup(_built(_IdsAndFeatures, 18), _batches((ids, z), y))


@case(
    "healthy",
    "ok",
    "scalecheck's own fix applied: the heterogeneous features (stds 1e-2 .. 1e4) behind a "
    "fitted Standardizer, so the first trainable layer sees unit-scale values.",
    badly_scaled=False,
    model_standardizes=True,
    suspect="The raw input is badly scaled; only the model's own fixed rescaling makes it "
    "healthy, so a rule that looks at the raw input alone would flag it.",
)
def standardizer_prepended() -> Setup:
    x, y = _hetero_data()
    mean, std = x.mean(axis=0), x.std(axis=0)

    def first() -> nn.Module:
        return Standardizer(mean.tolist(), std.tolist())

    return Setup(_mlp(4, 1, "tanh", seed=1, first=first), _batches(x, y))


# -- well scaled inputs, another bug ----------------------------------------------------------


def _standard_regression(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 4))
    return z, _smooth_target(z)


@case(
    "other-cause",
    "ok",
    "Standardized inputs trained with Adam at lr 3.0: the learning rate, not the scale, "
    "stops training (standardized inputs fail the same way at that lr).",
    badly_scaled=False,
    user_lr=3.0,
)
def learning_rate_far_too_high() -> Setup:
    x, y = _standard_regression(28)
    return Setup(_mlp(4, 1, "tanh", seed=19), _batches(x, y))


def _standard_classes(seed: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 4))
    w = rng.normal(0, 1.5, (4, k))
    return z, _classes(z @ w + 0.3 * rng.standard_normal((N, k)))


@case(
    "other-cause",
    "ok",
    "Softmax probabilities fed to CrossEntropyLoss (which applies log-softmax again): the "
    "loss cannot fall below log(1 + (C - 1)/e); standardized inputs are already there.",
    badly_scaled=False,
)
def softmax_into_cross_entropy() -> Setup:
    x, labels = _standard_classes(29)
    model = _mlp(4, 3, "tanh", seed=20, last=lambda: nn.Softmax(dim=1))
    return Setup(model, _batches(x, labels), nn.CrossEntropyLoss())


def broadcast_mse(output: Tensor, target: Tensor) -> Tensor:
    """A hand-written MSE with the classic bug: output ``[N, 1]`` minus target ``[N]``
    broadcasts to ``[N, N]``, so every prediction is compared with every target."""
    return ((output - target) ** 2).mean()


@case(
    "other-cause",
    "ok",
    "Targets broadcast wrongly (output [N, 1] minus targets [N] -> [N, N]): the best any "
    "model can do is predict the mean; rescaling the inputs changes nothing.",
    badly_scaled=False,
    baseline="mse-flat",
)
def targets_broadcast_wrongly() -> Setup:
    x, y = _standard_regression(30)
    return Setup(_mlp(4, 1, "tanh", seed=21), _batches(x, y.ravel()), broadcast_mse)


@case(
    "other-cause",
    "ok",
    "Labels independent of the standardized features: there is nothing to learn beyond "
    "memorizing; rescaling changes nothing.",
    badly_scaled=False,
)
def random_labels() -> Setup:
    rng = np.random.default_rng(31)
    z = rng.standard_normal((N, 4))
    labels = rng.integers(0, 3, N).astype(np.int64)
    return Setup(_mlp(4, 3, "tanh", hidden=8, seed=22), _batches(z, labels))


@case(
    "other-cause",
    "ok",
    "Standardized inputs, but the first layer initialized 30x too large: the tanh units "
    "saturate because of the weights, not the inputs (Adam eventually shrinks them).",
    badly_scaled=False,
    suspect="Saturation at the input layer with well-scaled inputs: the static rules fire "
    "(SC201), the verdict must not blame the input scale.",
)
def oversized_init_tanh() -> Setup:
    x, y = _standard_regression(32)
    model = _mlp(4, 1, "tanh", seed=23)
    with torch.no_grad():
        first = model[0]
        assert isinstance(first, nn.Linear)
        first.weight.mul_(30.0)
        first.bias.mul_(30.0)
    return Setup(model, _batches(x, y))
