"""Which dimension of an input holds its features, when the model permutes it first.

Images from numpy or PIL are ``[N, H, W, C]``; a model permutes them to ``[N, C, H, W]`` for
its first convolution. Sequences from some libraries are ``[N, F, T]`` and are transposed to
``[N, T, F]`` for a linear layer. The features are the dimension the first layer takes as
its own (the channels, the last dimension), followed back through the permute: before, the
image's rows were reported as 16 "features" and the standardizer was fitted per row.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import scalecheck


class HWCNet(nn.Module):
    """A small CNN on ``[N, H, W, C]`` uint8 images, permuted and cast in ``forward``."""

    def __init__(self, how: str = "permute") -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Sequential(nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "permute":
            x = x.permute(0, 3, 1, 2)
        elif self.how == "movedim":
            x = torch.movedim(x, -1, 1)
        else:  # two transposes
            x = x.transpose(1, 3).transpose(2, 3)
        return self.head(self.conv(x.float()))


def _images(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    # three channels at different levels, so per-channel statistics differ from per-row ones
    levels = torch.tensor([30, 120, 220], dtype=torch.int16)
    noise = torch.randint(-30, 31, (128, 16, 16, 3), generator=g, dtype=torch.int16)
    imgs = (levels + noise).clamp(0, 255).to(torch.uint8)
    labels = torch.randint(0, 4, (128,), generator=g)
    return [(imgs[i : i + 32], labels[i : i + 32]) for i in range(0, 128, 32)]


@pytest.mark.parametrize("how", ["permute", "movedim", "transposes"])
def test_channels_last_images_are_measured_per_channel(how):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HWCNet(how)
    batches = _images()
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (inp,) = report.inputs
    assert inp.feature_axis == 3 and len(inp.features) == 3
    pixels = torch.cat([x for x, _ in batches]).double()
    for f, channel in zip(inp.features, range(3), strict=True):
        assert f.mean == pytest.approx(pixels[..., channel].mean().item(), rel=1e-6)
        assert f.std == pytest.approx(pixels[..., channel].std(unbiased=False).item(), rel=1e-5)
    # the input layer's gradient shares are per channel too (the weight's dimension 1)
    (weight,) = [g for g in report.gradients if g.name == "conv.weight"]
    assert len(weight.feature_share) == 3
    assert report.verdict != scalecheck.Verdict.OK
    # the fix standardizes the channels of the raw [N, H, W, C] batches
    s = report.standardizer()
    assert s.axis == 3 and s.features == 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fixed = nn.Sequential(s, HWCNet(how))
    after = scalecheck.diagnose(fixed, batches, trial=False, strict=True)
    assert after.verdict == scalecheck.Verdict.OK, after.summary


def test_a_transposed_sequence_is_measured_along_its_feature_dimension():
    """``[N, F, T]`` batches transposed for a linear layer: F features, not T."""

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x.transpose(1, 2)).mean(1)

    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([1.0, 1.0, 1e4, 1.0]).reshape(1, 4, 1)
    x = torch.randn(64, 4, 10, generator=g) * scale
    batches = [(x[i : i + 16], torch.randn(16, 1, generator=g)) for i in range(0, 64, 16)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Seq()
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (inp,) = report.inputs
    assert inp.feature_axis == 1 and len(inp.features) == 4
    flagged = [f for f in report.findings if f.code == "SC101"]
    assert flagged and flagged[0].where == "input[2]"


def test_a_reshape_before_the_first_layer_keeps_the_default_axis():
    """Flat ``[N, 768]`` pixels viewed as ``[N, 3, 16, 16]``: the view merges nothing the
    tracer can follow to one input dimension, so the input is measured as it comes, one
    feature per column."""

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x.view(-1, 3, 16, 16)).mean((1, 2, 3)).unsqueeze(1)

    g = torch.Generator().manual_seed(2)
    batches = [(torch.rand(8, 768, generator=g), torch.rand(8, 1, generator=g))]
    report = scalecheck.diagnose(Flat(), batches, trial=False, strict=True)
    (inp,) = report.inputs
    assert inp.feature_axis == 1 and len(inp.features) == 768


class _FlatClassifier(nn.Module):
    """MNIST's classifier: the image flattened whole into a linear layer (by a module, or
    by ``x.view`` in ``forward``)."""

    def __init__(self, pixels: int, by_view: bool) -> None:
        super().__init__()
        self.by_view = by_view
        self.flatten = nn.Flatten()
        self.net = nn.Sequential(nn.Linear(pixels, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(x.shape[0], -1) if self.by_view else self.flatten(x))


@pytest.mark.parametrize("by_view", [False, True], ids=["Flatten", "view"])
@pytest.mark.parametrize("channels", [1, 3])
def test_an_image_flattened_into_a_linear_layer_is_measured_per_channel(channels, by_view):
    """Before, the features were the image's last dimension: 8 columns of an 8 x 8 image,
    and a standardizer per column. Now the channels, as a convolution's (and torchvision's
    Normalize) take them, and the fitted standardizer in front makes the report ok."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([255.0, 1.0, 1000.0])[:channels].view(1, channels, 1, 1)
    batches = [
        (
            torch.rand(16, channels, 8, 8, generator=g) * scale,
            torch.randint(0, 10, (16,), generator=g),
        )
        for _ in range(4)
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _FlatClassifier(channels * 64, by_view)
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (inp,) = report.inputs
    assert inp.feature_axis == 1 and len(inp.features) == channels
    data = torch.cat([x for x, _ in batches]).double()
    for c, f in enumerate(inp.features):
        assert f.max == pytest.approx(float(data[:, c].max()))
        assert f.mean == pytest.approx(float(data[:, c].mean()))
    assert "SC101" in report.codes()
    fixed = nn.Sequential(report.standardizer(), model)
    assert scalecheck.diagnose(fixed, batches, trial=False, strict=True).verdict == (
        scalecheck.Verdict.OK
    )


def test_a_sequence_flattened_into_a_linear_layer_keeps_its_last_axis():
    """Only images and volumes take their channels: ``[N, T, F]`` flattened into a linear
    layer is still measured along F."""
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(16, 5, 3, generator=g), torch.randn(16, 1, generator=g)) for _ in range(3)
    ]
    model = nn.Sequential(nn.Flatten(), nn.Linear(15, 8), nn.Tanh(), nn.Linear(8, 1))
    (inp,) = scalecheck.diagnose(model, batches, trial=False, strict=True).inputs
    assert inp.feature_axis == 2 and len(inp.features) == 3


def test_an_image_in_numpy_layout_flattened_into_a_linear_layer_keeps_its_channels_last():
    """``[N, H, W, C]`` (numpy, PIL, TensorFlow) flattened whole: the last dimension is
    the smaller one, so it stays the channels (measured along dimension 1, these were
    the image's 8 rows, and the fitted standardizer left the report at_risk)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 100.0, 1000.0]).view(1, 1, 1, 3)
    batches = [
        (torch.rand(16, 8, 8, 3, generator=g) * scale, torch.randint(0, 10, (16,), generator=g))
        for _ in range(4)
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _FlatClassifier(192, by_view=False)
    report = scalecheck.diagnose(model, batches, trial=False, strict=True)
    (inp,) = report.inputs
    assert inp.feature_axis == 3 and len(inp.features) == 3
    assert inp.blank_positions == 0
    fixed = nn.Sequential(report.standardizer(), model)
    assert scalecheck.diagnose(fixed, batches, trial=False, strict=True).verdict == (
        scalecheck.Verdict.OK
    )


class _ScaledFlatClassifier(_FlatClassifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(((x - 0.5) / 0.25).flatten(1))


def test_what_the_layer_receives_from_a_transformed_flattened_image_is_per_channel_too():
    """``((x - 0.5) / 0.25).flatten(1)``: what the first layer receives is measured per
    channel (viewed as the image), and the blank positions are counted there (the raw
    input's zeros arrive as -2, not 0)."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.zeros(16, 2, 6, 6)
        x[:, 0] = torch.rand(16, 6, 6, generator=g)
        x[:, 1, 2:4, 2:4] = 0.5  # 0.5 becomes 0 after the model's transform...
        x[:, 1, :, 5] = torch.rand(16, 6, generator=g)  # ...except in the last column
        batches.append((x, torch.randint(0, 10, (16,), generator=g)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _ScaledFlatClassifier(72, by_view=False)
    (inp,) = scalecheck.diagnose(model, batches, trial=False, strict=True).inputs
    assert len(inp.features) == 2 and len(inp.seen_by_layer) == 2
    seen = torch.cat([(x - 0.5) / 0.25 for x, _ in batches]).double()
    for c, f in enumerate(inp.seen_by_layer):
        assert f.mean == pytest.approx(float(seen[:, c].mean()))
        assert f.min == float(seen[:, c].min()) and f.max == float(seen[:, c].max())
    assert inp.blank_positions == 4  # channel 1's centre: 0 after the transform
