"""Hypothesis strategies: data with controlled per-feature offset and scale, and small models.

For property tests over random input ranges ("whatever the units of my features, the
check catches badly scaled ones"). Needs the ``hypothesis`` extra
(``pip install "scalecheck[hypothesis]"``); ``import scalecheck`` never imports this
module.

Every feature ``j`` of a drawn matrix is ``offset[j] + scale[j] * z[:, j]`` where ``z[:, j]``
has mean exactly 0 and standard deviation exactly 1, so the offset and scale that were
drawn are the mean and standard deviation scalecheck measures. Offsets and scales are
drawn log-uniformly (as powers of ten whose exponent is drawn), so examples cover every
order of magnitude evenly and shrink towards simple cases: exponent 0 (scale 1), offset
0, the first feature, the mildest badly scaled value.

Three families:

- well scaled (``scalings(well=True)``): every feature has ``|offset| <= 1`` and
  ``scale`` in [0.5, 2], so its condition number (see :func:`scalecheck.measurements.feature_kappa`)
  is at most 21;
- badly scaled (``scalings(well=False)``): at least one feature has a condition number of
  at least :data:`BAD_KAPPA` (1e4, ten times scalecheck's warning level): an offset of
  100 to 1e6 times its scale, a scale of 1e3 to 1e6, or a scale of 1e-3 to 5e-3;
- anything (``scalings()``): offsets 0 or +-1e-3 .. 1e6, scales 1e-3 .. 1e6.

Determinism: nothing here reads a global random generator. The noise comes from a
``numpy.random.Generator`` and the model weights from a ``torch.Generator``, both seeded
from integers drawn through hypothesis, so a failing example replays exactly.

Use ``@settings(deadline=None)`` on tests that diagnose drawn cases: building a model and
running a few batches through it takes longer than hypothesis' default 200 ms deadline the
first time (lazy imports, warm-up), which would be reported as a flaky deadline error.

Example:
    >>> from hypothesis import given, settings
    >>> from scalecheck import strategies as scs
    >>> from scalecheck.testing import assert_well_scaled
    >>> @settings(deadline=None, max_examples=5)
    ... @given(scs.cases(scs.scalings(well=True)))
    ... def test_well_scaled_inputs_pass(case):
    ...     assert_well_scaled(case.model, case.loader(), fail_on="warning", trial=False)
    >>> test_well_scaled_inputs_pass()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import _validation as v
from .errors import InvalidArgumentError, MissingDependencyError
from .measurements import feature_kappa

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        'scalecheck.strategies needs hypothesis: pip install "scalecheck[hypothesis]"'
    ) from exc

__all__ = [
    "BAD_KAPPA",
    "ScaledCase",
    "ScaledData",
    "Scaling",
    "cases",
    "feature_matrices",
    "loaders",
    "log_uniform",
    "models",
    "offsets",
    "scaled_data",
    "scalings",
]

#: A badly scaled feature has a condition number at least this large: ten times the
#: level at which scalecheck's SC101 warns (1e3), so that no rounding decides the outcome.
BAD_KAPPA = 1e4
#: Well-scaled features: ``|offset| <= WELL_OFFSET`` and ``scale`` in ``WELL_SCALE``.
WELL_OFFSET = 1.0
WELL_SCALE = (0.5, 2.0)
#: Ranges of the badly scaled kinds (each guarantees ``kappa >= BAD_KAPPA``):
#: offset/scale ratio (kappa >= 4 * ratio^2), large scales (kappa >= scale^2) and small
#: scales (kappa >= 1 / (4 * scale^2)).
BAD_RATIO = (1e2, 1e6)
BAD_LARGE_SCALE = (1e3, 1e6)
BAD_SMALL_SCALE = (1e-3, 5e-3)
#: The range of magnitudes drawn when no family is asked for.
ANY_MAGNITUDE = (1e-3, 1e6)
ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}

_SEEDS = st.integers(0, 2**32 - 1)


# -- records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scaling:
    """The offset (mean) and scale (standard deviation) of every feature.

    Attributes:
        offsets: one mean per feature.
        scales: one standard deviation per feature (positive).

    Example:
        >>> s = Scaling(offsets=(0.0, 1e5), scales=(1.0, 5e4))
        >>> s.well_scaled, s.badly_scaled, s.badly_scaled_features
        (False, True, (1,))
    """

    offsets: tuple[float, ...]
    scales: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.scales) or not self.offsets:
            raise InvalidArgumentError(
                f"offsets and scales must have the same, non-zero length, got "
                f"{len(self.offsets)} and {len(self.scales)}."
            )
        for s in self.scales:
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
                raise InvalidArgumentError(
                    f"scales must be positive finite numbers, got {v.describe(s)}."
                )

    @property
    def features(self) -> int:
        """The number of features."""
        return len(self.offsets)

    @property
    def kappas(self) -> tuple[float, ...]:
        """Each feature's condition number, as scalecheck computes it from mean and std."""
        return tuple(
            float(feature_kappa(m, s))  # type: ignore[arg-type]
            for m, s in zip(self.offsets, self.scales, strict=True)
        )

    @property
    def well_scaled(self) -> bool:
        """Every feature has ``|offset| <= 1`` and ``scale`` in [0.5, 2]."""
        lo, hi = WELL_SCALE
        return all(
            abs(m) <= WELL_OFFSET and lo <= s <= hi
            for m, s in zip(self.offsets, self.scales, strict=True)
        )

    @property
    def badly_scaled_features(self) -> tuple[int, ...]:
        """Indices of the features whose condition number is at least :data:`BAD_KAPPA`."""
        return tuple(j for j, k in enumerate(self.kappas) if k >= BAD_KAPPA)

    @property
    def badly_scaled(self) -> bool:
        """Some feature has a condition number of at least :data:`BAD_KAPPA`."""
        return bool(self.badly_scaled_features)


@dataclass(frozen=True)
class ScaledData:
    """A drawn regression data set: features with a known scaling, and targets.

    Attributes:
        scaling: the offsets and scales the features were drawn with.
        x: ``[samples, features]`` float64 array; column ``j`` has mean ``offsets[j]`` and
            (population) standard deviation ``scales[j]``, up to rounding.
        y: ``[samples, 1]`` float64 targets with mean 0 and standard deviation 1, a smooth
            function of the standardized features (so the task is learnable and the
            targets themselves are well scaled).
        batch_size: samples per batch of :meth:`loader`.
    """

    scaling: Scaling
    x: np.ndarray
    y: np.ndarray
    batch_size: int

    def loader(self, dtype: torch.dtype = torch.float64) -> DataLoader:
        """A DataLoader of ``(x, y)`` batches, in order (no shuffling, no RNG).

        float64 by default: in float32 a feature with offset 1e6 and scale 1e-3 would
        round to a constant. scalecheck measures the batch as given and casts it to the
        model's dtype only to run the model.
        """
        x = torch.from_numpy(self.x).to(dtype)
        y = torch.from_numpy(self.y).to(dtype)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=False)


@dataclass(frozen=True)
class ScaledCase:
    """Drawn data and a small model that takes it.

    Attributes:
        data: the :class:`ScaledData`.
        model: ``Linear(features, hidden) -> activation -> Linear(hidden, 1)``, float32.
    """

    data: ScaledData
    model: nn.Module

    @property
    def scaling(self) -> Scaling:
        """The scaling the data was drawn with."""
        return self.data.scaling

    def loader(self, dtype: torch.dtype = torch.float64) -> DataLoader:
        """The data's loader (see :meth:`ScaledData.loader`)."""
        return self.data.loader(dtype)


# -- numbers ---------------------------------------------------------------------------------
def log_uniform(min_value: float, max_value: float) -> st.SearchStrategy[float]:
    """Floats in [min_value, max_value] whose base-10 logarithm is uniform.

    Shrinks towards the value closest to 1 in the range (exponent 0 when it is inside).

    Example:
        >>> from hypothesis import find
        >>> find(log_uniform(1e-3, 1e6), lambda x: True)
        1.0
    """
    lo = float(v.check_number("min_value", min_value, minimum=0.0) or 0.0)
    hi = float(v.check_number("max_value", max_value, minimum=0.0) or 0.0)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise InvalidArgumentError(
            f"log_uniform needs 0 < min_value <= max_value < inf, got {lo} and {hi}."
        )
    a, b = math.log10(lo), math.log10(hi)
    return st.floats(a, b).map(lambda e: min(max(10.0**e, lo), hi))


def offsets(
    min_magnitude: float = ANY_MAGNITUDE[0], max_magnitude: float = ANY_MAGNITUDE[1]
) -> st.SearchStrategy[float]:
    """0, or a signed float whose magnitude is log-uniform in the range (shrinks to 0).

    Example:
        >>> from hypothesis import find
        >>> find(offsets(), lambda x: True)
        0.0
    """
    signs = st.sampled_from((1.0, -1.0))
    signed = st.tuples(signs, log_uniform(min_magnitude, max_magnitude)).map(lambda t: t[0] * t[1])
    return st.one_of(st.just(0.0), signed)


def _count_strategy(name: str, value: int | st.SearchStrategy[int]) -> Any:
    if isinstance(value, st.SearchStrategy):
        return value
    return st.just(v.check_int(name, value, minimum=1))


def _choice_strategy(name: str, value: str | st.SearchStrategy[str], choices: Any) -> Any:
    if isinstance(value, st.SearchStrategy):
        return value
    return st.just(v.check_choice(name, value, choices))


def _scaling_strategy(scaling: Scaling | st.SearchStrategy[Scaling] | None) -> Any:
    if scaling is None:
        return scalings()
    if isinstance(scaling, Scaling):
        return st.just(scaling)
    if isinstance(scaling, st.SearchStrategy):
        return scaling
    raise InvalidArgumentError(
        f"scaling must be a Scaling, a strategy of Scaling (e.g. scalings(well=True)) or "
        f"None, got {v.describe(scaling)}."
    )


@st.composite
def _bad_feature(draw: Any) -> tuple[float, float]:
    kind = draw(st.sampled_from(("offset", "large", "small")))
    if kind == "offset":
        scale = draw(log_uniform(1e-3, 1e3))
        ratio = draw(log_uniform(*BAD_RATIO))
        sign = draw(st.sampled_from((1.0, -1.0)))
        return sign * ratio * scale, scale
    if kind == "large":
        return draw(offsets()), draw(log_uniform(*BAD_LARGE_SCALE))
    return draw(offsets(1e-3, 1.0)), draw(log_uniform(*BAD_SMALL_SCALE))


@st.composite
def _scalings(draw: Any, features: Any, well: bool | None) -> Scaling:
    n = draw(features)
    if n < 1:
        raise InvalidArgumentError(f"features must be >= 1, got {n} from the strategy.")
    if well:
        lo, hi = WELL_SCALE
        offs = [draw(st.floats(-WELL_OFFSET, WELL_OFFSET)) for _ in range(n)]
        scales = [draw(log_uniform(lo, hi)) for _ in range(n)]
        return Scaling(tuple(offs), tuple(scales))
    pairs = []
    bad = draw(st.integers(0, n - 1)) if well is False else -1
    for j in range(n):
        if j == bad:
            pairs.append(draw(_bad_feature()))
        else:
            pairs.append((draw(offsets()), draw(log_uniform(*ANY_MAGNITUDE))))
    return Scaling(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


def scalings(
    features: int | st.SearchStrategy[int] = st.integers(1, 3),  # noqa: B008
    *,
    well: bool | None = None,
) -> st.SearchStrategy[Scaling]:
    """Per-feature offsets and scales (see the module documentation for the ranges).

    Args:
        features: the number of features, or a strategy for it (default 1 to 3).
        well: True for well-scaled features only, False for at least one badly scaled
            feature (the others drawn from the whole range), None for anything.

    Example:
        >>> from hypothesis import find
        >>> s = find(scalings(2, well=False), lambda s: True)
        >>> s.features, s.badly_scaled, s.well_scaled
        (2, True, False)
    """
    if well is not None:
        v.check_bool("well", well)
    return _scalings(_count_strategy("features", features), well)


def _standard_columns(rng: np.random.Generator, samples: int, features: int) -> np.ndarray:
    """Columns with mean exactly 0 and population standard deviation exactly 1."""
    z = rng.standard_normal((samples, features))
    z -= z.mean(axis=0)
    z /= z.std(axis=0)
    return z


def _build_matrix(scaling: Scaling, z: np.ndarray) -> np.ndarray:
    return np.asarray(scaling.offsets) + np.asarray(scaling.scales) * z


@st.composite
def _feature_matrices(draw: Any, scaling: Any, samples: int) -> np.ndarray:
    drawn = draw(scaling)
    rng = np.random.default_rng(draw(_SEEDS))
    return _build_matrix(drawn, _standard_columns(rng, samples, drawn.features))


def feature_matrices(
    scaling: Scaling | st.SearchStrategy[Scaling] | None = None,
    *,
    samples: int = 64,
) -> st.SearchStrategy[np.ndarray]:
    """``[samples, features]`` float64 arrays whose columns have the drawn offset and scale.

    Args:
        scaling: a :class:`Scaling`, or a strategy for one (default :func:`scalings`).
        samples: rows (at least 2).

    Example:
        >>> from hypothesis import find
        >>> x = find(feature_matrices(Scaling((5.0,), (2.0,)), samples=10), lambda x: True)
        >>> round(float(x.mean()), 9), round(float(x.std()), 9)
        (5.0, 2.0)
    """
    strategy = _scaling_strategy(scaling)
    return _feature_matrices(strategy, v.check_int("samples", samples, minimum=2))


@st.composite
def _scaled_data(draw: Any, scaling: Any, samples: int, batch_size: int) -> ScaledData:
    drawn = draw(scaling)
    rng = np.random.default_rng(draw(_SEEDS))
    z = _standard_columns(rng, samples, drawn.features)
    # Targets: a smooth function of the standardized features, then standardized exactly,
    # with weights of magnitude 0.5..2 so that no feature is irrelevant by accident.
    w = rng.uniform(0.5, 2.0, drawn.features) * rng.choice((-1.0, 1.0), drawn.features)
    t = np.tanh(z @ w / math.sqrt(drawn.features))
    t = (t - t.mean()) / t.std()
    return ScaledData(drawn, _build_matrix(drawn, z), t.reshape(-1, 1), batch_size)


def scaled_data(
    scaling: Scaling | st.SearchStrategy[Scaling] | None = None,
    *,
    samples: int = 64,
    batch_size: int = 16,
) -> st.SearchStrategy[ScaledData]:
    """:class:`ScaledData`: features with the drawn scaling, and well-scaled targets.

    Args:
        scaling: a :class:`Scaling`, or a strategy for one (default :func:`scalings`).
        samples: rows (at least 2).
        batch_size: samples per batch of :meth:`ScaledData.loader`.

    Example:
        >>> from hypothesis import find
        >>> d = find(scaled_data(Scaling((1e5,), (5e4,)), samples=40), lambda d: True)
        >>> [tuple(x.shape) for x, y in d.loader()]
        [(16, 1), (16, 1), (8, 1)]
    """
    strategy = _scaling_strategy(scaling)
    samples = v.check_int("samples", samples, minimum=2)
    batch_size = v.check_int("batch_size", batch_size, minimum=1)
    return _scaled_data(strategy, samples, batch_size)


def loaders(
    scaling: Scaling | st.SearchStrategy[Scaling] | None = None,
    *,
    samples: int = 64,
    batch_size: int = 16,
) -> st.SearchStrategy[DataLoader]:
    """DataLoaders of float64 ``(x, y)`` batches (see :func:`scaled_data`).

    Use :func:`scaled_data` instead when the test needs the scaling that was drawn.
    """
    return scaled_data(scaling, samples=samples, batch_size=batch_size).map(lambda d: d.loader())


def _init_linear(layer: nn.Linear, gen: torch.Generator) -> None:
    """PyTorch's default initialization of ``nn.Linear`` (uniform in +-1/sqrt(fan_in) for
    weight and bias), drawn from *gen* instead of the global generator."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=gen)


def build_model(
    features: int, hidden: int = 8, activation: str = "tanh", outputs: int = 1, seed: int = 0
) -> nn.Sequential:
    """``Linear(features, hidden) -> activation -> Linear(hidden, outputs)`` with PyTorch's
    default initialization drawn from a generator seeded by *seed* (the global generator
    is neither read nor advanced).

    Args:
        features: input features.
        hidden: hidden units.
        activation: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        outputs: output units.
        seed: seeds the initialization.

    Example:
        >>> import torch
        >>> a, b = build_model(2, seed=3), build_model(2, seed=3)
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    features = v.check_int("features", features, minimum=1)
    hidden = v.check_int("hidden", hidden, minimum=1)
    outputs = v.check_int("outputs", outputs, minimum=1)
    act = v.check_choice("activation", activation, ACTIVATIONS)
    seed = v.check_int("seed", seed, minimum=0)
    gen = torch.Generator().manual_seed(seed)
    first = nn.utils.skip_init(nn.Linear, features, hidden)
    last = nn.utils.skip_init(nn.Linear, hidden, outputs)
    _init_linear(first, gen)
    _init_linear(last, gen)
    return nn.Sequential(first, ACTIVATIONS[act](), last)


@st.composite
def _models(draw: Any, features: int, hidden: Any, activation: Any, outputs: int) -> nn.Sequential:
    return build_model(features, draw(hidden), draw(activation), outputs, draw(_SEEDS))


def models(
    features: int,
    *,
    hidden: int | st.SearchStrategy[int] = st.integers(2, 16),  # noqa: B008
    activation: str | st.SearchStrategy[str] = st.sampled_from(("tanh", "sigmoid")),  # noqa: B008
    outputs: int = 1,
) -> st.SearchStrategy[nn.Sequential]:
    """Small MLPs for *features* inputs (see :func:`build_model`), seeded by a drawn integer.

    Args:
        features: the number of input features.
        hidden: hidden units, or a strategy for them.
        activation: ``"tanh"``, ``"sigmoid"`` or ``"relu"``, or a strategy for one. ReLU is
            not among the defaults: with a handful of units, all of them can be dead on
            well-scaled data by chance, which scalecheck reports (SC202) as it should.
        outputs: output units.
    """
    return _models(
        v.check_int("features", features, minimum=1),
        _count_strategy("hidden", hidden),
        _choice_strategy("activation", activation, ACTIVATIONS),
        v.check_int("outputs", outputs, minimum=1),
    )


@st.composite
def _cases(draw: Any, data: Any, hidden: Any, activation: Any) -> ScaledCase:
    drawn = draw(data)
    return ScaledCase(
        drawn, draw(models(drawn.scaling.features, hidden=hidden, activation=activation))
    )


def cases(
    scaling: Scaling | st.SearchStrategy[Scaling] | None = None,
    *,
    samples: int = 64,
    batch_size: int = 16,
    hidden: int | st.SearchStrategy[int] = st.integers(2, 16),  # noqa: B008
    activation: str | st.SearchStrategy[str] = st.sampled_from(("tanh", "sigmoid")),  # noqa: B008
) -> st.SearchStrategy[ScaledCase]:
    """Drawn data (:func:`scaled_data`) and a model that takes it (:func:`models`).

    Args:
        scaling: a :class:`Scaling`, or a strategy for one (default :func:`scalings`).
        samples: rows (at least 2).
        batch_size: samples per batch.
        hidden: hidden units, or a strategy for them.
        activation: the activation, or a strategy for it (see :func:`models`).

    Example:
        >>> from hypothesis import find
        >>> case = find(cases(scalings(1, well=True)), lambda c: True)
        >>> case.scaling
        Scaling(offsets=(0.0,), scales=(1.0,))
        >>> case.model
        Sequential(
          (0): Linear(in_features=1, out_features=2, bias=True)
          (1): Tanh()
          (2): Linear(in_features=2, out_features=1, bias=True)
        )
    """
    data = scaled_data(scaling, samples=samples, batch_size=batch_size)
    _count_strategy("hidden", hidden)
    _choice_strategy("activation", activation, ACTIVATIONS)
    return _cases(data, hidden, activation)
