"""Draw the documentation's figures and report excerpts from the reference case.

Nothing in the docs is drawn by hand: the figures are ``report.plot(...)`` of the reference
case (``scalecheck.reference.interpolation``) diagnosed right now, and the report text in
the tutorial is ``str(report)`` of the same run. ``docs/hooks.py`` calls :func:`build` on
every ``mkdocs build``; run this file to write the images to a folder instead::

    python docs/gen_figures.py out/

The trial runs a fixed number of steps (no time budget cut-off), so the pictures do not
depend on the machine that builds the docs.
"""

from __future__ import annotations

import functools
import io
import sys
from dataclasses import dataclass
from pathlib import Path

#: The trial as the tutorial runs it: 100 Adam steps per learning rate and arm.
TRIAL_STEPS = 100
DPI = 80


@dataclass(frozen=True)
class Built:
    """What the docs use: PNG files by path, and text blocks by name."""

    figures: dict[str, bytes]
    texts: dict[str, str]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    # no metadata: the same report gives the same bytes
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


@functools.cache
def build() -> Built:
    """Diagnose the reference case raw and fixed, and draw everything the docs show."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    import scalecheck
    from scalecheck.reference import interpolation as ref
    from scalecheck.trial import TrialOptions

    # A network this small runs fastest on one thread: with more, waking the threads for
    # every tiny operation costs more than the operation (ten times more on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trial = TrialOptions(steps=TRIAL_STEPS, budget_s=3600.0)
        model = ref.make_model(seed=0)
        report = scalecheck.diagnose(model, ref.make_loader(seed=0), trial=trial)
        fixed_model = torch.nn.Sequential(report.standardizer(), ref.make_model(seed=0))
        fixed = scalecheck.diagnose(fixed_model, ref.make_loader(seed=0), trial=trial)
    finally:
        torch.set_num_threads(threads)

    figures = {
        f"figures/reference-{kind}.png": _png(report.plot(kind))
        for kind in ("summary", "inputs", "activations", "gradients", "trial")
    }
    figures.update(
        {
            f"figures/fixed-{kind}.png": _png(fixed.plot(kind))
            for kind in ("inputs", "activations", "gradients")
        }
    )
    texts = {
        "reference-report": str(report),
        "fixed-report": str(fixed),
        "reference-json": _json_excerpt(report),
    }
    return Built(figures=figures, texts=texts)


def _json_excerpt(report) -> str:
    """Part of ``report.to_dict()``: the keys a CI script reads, and two findings."""
    import json

    data = report.to_dict()
    excerpt = {
        "schema_version": data["schema_version"],
        "verdict": data["verdict"],
        "summary": data["summary"],
        "findings": [
            {k: f[k] for k in ("code", "name", "severity", "where", "message")}
            for f in data["findings"][:2]
        ],
    }
    return json.dumps(excerpt, indent=2)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/gen_figures.py OUTPUT_FOLDER", file=sys.stderr)
        return 2
    out = Path(argv[0])
    built = build()
    for name, data in built.figures.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
