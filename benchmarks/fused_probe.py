"""What a compiled one-pass kernel per tensor would buy: a probe, not part of scalecheck.

The MLP 784 stays over the 1.3x bar because each monitor makes several eager passes and a
dozen small operations per tensor (benchmarks/README.md, items 51, 54 and 56). This script
measures the best case of the alternative that needs a product decision: every monitor's
per-batch work replaced by one compiled pass per tensor (per-column sum and sum of squares
in float64, per-column count below zero, the global minimum and maximum) and one read of
its two-value range. It builds that kernel with ``torch.utils.cpp_extension.load_inline``
(a C++ compiler and ninja; about 50 s the first time, cached in ``--build-dir``), checks it
against torch, then times, interleaved in one process: the plain loop, ``diagnose``,
``diagnose`` with its activation sites as one kernel call each, with every monitor as one
call per tensor, and with every monitor off. The "lean" variants compute less than
``diagnose`` does (no histogram samples, Gram matrix, stash folds or exact-zero checks):
they bound from below what a compiled path could reach.

``--reference-kernel`` runs the same variants with the torch reference of the statistics
instead of the compiled kernel (no compiler needed; it then times that reference, not a
fused pass): ``tests/test_benchmarks.py`` runs the script that way, and checks the
reference against numpy.

Example::

    .venv/bin/python benchmarks/fused_probe.py mlp784 --k 32 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablate
import overhead

KERNEL = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <vector>

// One pass over a contiguous float32 [N, F] tensor: per column the sum and the sum of
// squares (accumulated in float32 per block of 64 columns, stored as float64), the count
// of values below 0, and the global minimum and maximum. Column blocks run in parallel.
std::vector<torch::Tensor> column_stats(torch::Tensor z) {
  TORCH_CHECK(z.dim() == 2 && z.is_contiguous() && z.scalar_type() == at::kFloat,
              "column_stats takes a contiguous float32 [N, F] tensor");
  const int64_t n = z.size(0), f = z.size(1), block = 64;
  auto s1 = torch::zeros({f}, z.options().dtype(at::kDouble));
  auto s2 = torch::zeros({f}, z.options().dtype(at::kDouble));
  auto below = torch::zeros({f}, z.options());
  auto range = torch::empty({2}, z.options());
  const float* data = z.data_ptr<float>();
  double* out1 = s1.data_ptr<double>();
  double* out2 = s2.data_ptr<double>();
  float* outb = below.data_ptr<float>();
  const int64_t blocks = (f + block - 1) / block;
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t slots = std::max<int64_t>(blocks, 1);
  std::vector<float> lows(slots, inf), highs(slots, -inf);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t c0 = b * block, w = std::min(f, c0 + block) - c0;
      // per-column accumulators only: the inner loop has no reduction across columns, so
      // the compiler vectorizes it without reordering any float addition
      float a1[64] = {0}, a2[64] = {0}, ab[64] = {0}, al[64], ah[64];
      std::fill(al, al + 64, inf);
      std::fill(ah, ah + 64, -inf);
      for (int64_t r = 0; r < n; ++r) {
        const float* row = data + r * f + c0;
        for (int64_t c = 0; c < w; ++c) {
          const float v = row[c];
          a1[c] += v;
          a2[c] += v * v;
          ab[c] += v < 0.f ? 1.f : 0.f;
          al[c] = v < al[c] ? v : al[c];
          ah[c] = v > ah[c] ? v : ah[c];
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        out1[c0 + c] = a1[c];
        out2[c0 + c] = a2[c];
        outb[c0 + c] = ab[c];
      }
      lows[b] = *std::min_element(al, al + w);
      highs[b] = *std::max_element(ah, ah + w);
    }
  });
  range[0] = *std::min_element(lows.begin(), lows.end());
  range[1] = *std::max_element(highs.begin(), highs.end());
  return {s1, s2, below, range};
}
"""


def reference(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the kernel computes, in torch: per-column sum and sum of squares (float64),
    per-column count below zero (float32), and ``[min, max]``."""
    zd = z.double()
    return (
        zd.sum(0),
        zd.square().sum(0),
        (z < 0).sum(0).to(z.dtype),
        torch.stack((z.min(), z.max())),
    )


def build(directory: str) -> Any:
    from torch.utils.cpp_extension import load_inline

    return load_inline(
        "scalecheck_fused_probe",
        cpp_sources=KERNEL,
        functions=["column_stats"],
        # OpenMP: at::parallel_for then runs on torch's own OpenMP threads
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=directory,
        verbose=False,
    )


def check(kernel: Any) -> None:
    """The kernel agrees with :func:`reference` (sums to float32 accumulation error)."""
    gen = torch.Generator().manual_seed(0)
    for shape in ((256, 512), (3, 70), (1, 1), (17, 129)):
        z = torch.randn(*shape, generator=gen) * 3 + 0.5
        got, want = kernel.column_stats(z), reference(z)
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-3)
        assert torch.equal(got[2], want[2]) and torch.equal(got[3], want[3]), shape


def lean_methods(kernel: Any, kept: list[Any]) -> dict[str, Any]:
    """The per-batch entry points of the activation sites, the input and the gradient
    monitors (names of ``ablate.MONITORS``) as one kernel call per tensor and one read;
    the recurrent gates keep theirs."""

    def one(t: torch.Tensor) -> torch.Tensor | None:
        t = t.detach()
        if t.dim() == 1:
            t = t.view(1, -1)
        if t.dim() != 2 or t.dtype != torch.float32 or not t.is_contiguous():
            return None
        stats = kernel.column_stats(t)
        kept.append(stats)
        return stats[3]

    def site(self: Any, site: Any, z: torch.Tensor) -> None:
        r = one(z)
        if r is not None:
            kept.append(r.tolist())

    def batch_inputs(self: Any, tensors: dict[str, torch.Tensor], *args: Any) -> None:
        for t in tensors.values():
            one(t)

    def grads(self: Any, gs: Any) -> None:
        ranges = [r for r in (one(g) for g in gs if g is not None) if r is not None]
        if ranges:
            kept.append(torch.stack(ranges).tolist())

    return {"sites": site, "inputs": batch_inputs, "gradients": grads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=list(overhead.WORKLOADS))
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--build-dir", default=None, help="where to build (default: a temp dir)")
    parser.add_argument(
        "--reference-kernel",
        action="store_true",
        help="use the torch reference instead of building the kernel (checks the script)",
    )
    args = parser.parse_args()
    kernel: Any
    if args.reference_kernel:
        kernel = argparse.Namespace(column_stats=reference)
        print("the torch reference stands in for the kernel: not a fused pass")
    else:
        directory = args.build_dir or tempfile.mkdtemp(prefix="scalecheck_probe_")
        Path(directory).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        kernel = build(directory)
        print(f"built in {time.perf_counter() - start:.1f} s ({directory})")
        check(kernel)
    kept: list[Any] = []
    lean = lean_methods(kernel, kept)
    variants: dict[str, dict[str, Any]] = {
        "diagnose": {},
        "  sites as one kernel call": {"sites": lean["sites"]},
        "  every monitor as one call per tensor": dict(lean),
        "  every monitor off": dict.fromkeys(ablate.MONITORS, ablate.nothing),
    }
    workload = overhead.WORKLOADS[args.workload](args.k)
    times = ablate.time_variants(workload, variants, args.repeats, after_each=kept.clear)
    names = ["plain", *variants]
    plain = times["plain"]
    print(f"{args.workload}, K = {args.k}, {torch.get_num_threads()} threads, medians")
    for name in names:
        ms = statistics.median(times[name]) / args.k * 1e3
        line = f"  {name:40s} {ms:7.2f} ms per batch"
        if name != "plain":
            ratios = [t / p for t, p in zip(times[name], plain, strict=True)]
            line += (
                f"   {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                f"  {ms - statistics.median(plain) / args.k * 1e3:+.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
