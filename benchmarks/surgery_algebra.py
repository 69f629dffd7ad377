"""Naive Prototype Surgery algebra: the Gram route against the paper's explicit pinv route.

    python benchmarks/surgery_algebra.py            # the paper's MNIST and TinyImageNet shapes
    python benchmarks/surgery_algebra.py --quick    # pinv at TinyImageNet shape on N=20,000,
                                                    # extrapolated to N=100,000 (said so)

Both routes remove the first k of N random float64 feature rows (a ReLU of a Gaussian, so
non-negative like real penultimate features) from the prototypes W (C×d):

- pinv route (the paper): ``W0 + ((W − W0) @ pinv(F))[:, r] @ F[r]`` with all of F (N×d) in
  memory and its N×d pseudo-inverse;
- Gram route (the product): ``accumulate_gram`` over feature batches streamed from a generator
  (never an N×d array), ``surgery_projection`` once (the cached surgery index), then per request
  ``apply_surgery`` with the forget rows' ``gram``.

Each route runs in a fresh child process so that its peak RSS (``ru_maxrss``, which counts
torch's allocations) is its own. Times are the child's CPU time (one torch thread): on a
shared machine, wall time also counts the moments other processes hold the core, which moved
the same measurement by 2.5× between runs here. The last lines print the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from common import emit_result, fmt_seconds, header, median_seconds, run_child, set_threads

from ps_lightning.prototype_surgery.closed_form import (
    accumulate_gram,
    apply_surgery,
    cutoff_rtol,
    gram,
    surgery_projection,
)
from ps_lightning.timing import peak_host_memory_mib


class Shape(NamedTuple):
    n: int  # training samples
    d: int  # feature dimension
    c: int  # classes


SHAPES = {
    "mnist": Shape(60_000, 64, 10),  # LeNet5
    "tinyimagenet": Shape(100_000, 1024, 200),  # VGG16
}
FORGET_SIZES = (100, 1_000, 10_000)
CHECK_FORGET = 1_000  # the forget size whose result the two routes must agree on
BATCH = 4_096  # rows per streamed feature batch
SEED = 209


# ---------------------------------------------------------------------- the data
def feature_batches(n: int, d: int, seed: int = SEED) -> Iterator[torch.Tensor]:
    """N×d features as a stream of batches; batch i is the same in every process and route."""
    for i, start in enumerate(range(0, n, BATCH)):
        generator = torch.Generator().manual_seed(seed * 100_003 + i)
        rows = min(BATCH, n - start)
        yield torch.randn(rows, d, dtype=torch.float64, generator=generator).relu_()


def first_rows(k: int, d: int) -> torch.Tensor:
    """The first k rows of the stream: the forget set."""
    taken, batches = 0, []
    for batch in feature_batches(k, d):
        batches.append(batch)
        taken += len(batch)
    return torch.cat(batches)[:k]


def prototypes(shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, W0): initial prototypes and the trained ones, float64."""
    generator = torch.Generator().manual_seed(SEED)
    initial = 0.1 * torch.randn(shape.c, shape.d, dtype=torch.float64, generator=generator)
    trained = initial + torch.randn(shape.c, shape.d, dtype=torch.float64, generator=generator)
    return trained, initial


# ---------------------------------------------------------------------- child: Gram route
def gram_route(shape: Shape, out: Path) -> dict[str, Any]:
    weight, initial = prototypes(shape)
    rss_before = peak_host_memory_mib()
    generate_s = accumulate_s = 0.0
    full_gram: torch.Tensor | None = None
    stream = feature_batches(shape.n, shape.d)
    while True:
        started = time.process_time()
        batch = next(stream, None)
        generate_s += time.process_time() - started
        if batch is None:
            break
        started = time.process_time()
        full_gram = accumulate_gram(full_gram, batch)
        accumulate_s += time.process_time() - started
    assert full_gram is not None
    started = time.process_time()
    # rcond auto for these float64 features: the module's one default.
    projection, _ = surgery_projection(
        weight, initial, full_gram, cutoff_rtol("auto", shape.d, torch.float64)
    )
    projection_s = time.process_time() - started
    rss_index = peak_host_memory_mib()

    request_s: dict[str, float] = {}
    for k in FORGET_SIZES:
        forget = first_rows(k, shape.d)
        seconds, _ = median_seconds(
            lambda f=forget: apply_surgery(initial, projection, full_gram, gram(f)),
            repeats=5,
            warmup=1,
            cpu=True,
        )
        request_s[str(k)] = seconds
    check = apply_surgery(initial, projection, full_gram, gram(first_rows(CHECK_FORGET, shape.d)))
    torch.save(check, out)
    return {
        "generate_s": generate_s,
        "accumulate_s": accumulate_s,
        "projection_s": projection_s,
        "request_s": request_s,
        "rss_before_mib": rss_before,
        "rss_index_peak_mib": rss_index,
        "rss_peak_mib": peak_host_memory_mib(),
    }


# ---------------------------------------------------------------------- child: pinv route
def pinv_route(shape: Shape, n: int, repeats: int, out: Path) -> dict[str, Any]:
    weight, initial = prototypes(shape)
    rss_before = peak_host_memory_mib()
    features = torch.empty(n, shape.d, dtype=torch.float64)  # the route needs all of F
    for i, batch in enumerate(feature_batches(n, shape.d)):
        features[i * BATCH : i * BATCH + len(batch)] = batch
    rss_features = peak_host_memory_mib()
    retained = torch.arange(CHECK_FORGET, n)
    result: dict[str, torch.Tensor] = {}

    def explicit() -> None:
        theta = (weight - initial) @ torch.linalg.pinv(features)  # C×N
        result["w"] = initial + theta[:, retained] @ features[retained]

    seconds, times = median_seconds(explicit, repeats=repeats, warmup=0, cpu=True)
    rss_peak = peak_host_memory_mib()
    torch.save(result["w"], out)
    diff = None
    if n < shape.n:
        # The parent compares with its Gram-route child, which streamed all of the shape's N
        # rows; at a smaller N, the product's functions run here, on this same F.
        full_gram = None
        for start in range(0, n, BATCH):
            full_gram = accumulate_gram(full_gram, features[start : start + BATCH])
        assert full_gram is not None
        rtol = cutoff_rtol("auto", shape.d, torch.float64)
        via_gram = apply_surgery(
            initial,
            surgery_projection(weight, initial, full_gram, rtol)[0],
            full_gram,
            gram(features[:CHECK_FORGET]),
        )
        diff = float((result["w"] - via_gram).abs().max())
    return {
        "n": n,
        "pinv_s": seconds,
        "pinv_times_s": times,
        "rss_before_mib": rss_before,
        "rss_features_mib": rss_features,
        "rss_peak_mib": rss_peak,
        "max_abs_diff": diff,
    }


# ---------------------------------------------------------------------- the parent
def mib(n: int, d: int) -> float:
    return n * d * 8 / 2**20


def report_shape(name: str, shape: Shape, pinv_n: int, script: Path, tmp: Path) -> dict[str, Any]:
    print(
        f"\n## {name}: N={shape.n:,}, d={shape.d}, C={shape.c} (float64; F is "
        f"{mib(shape.n, shape.d):,.0f} MiB)"
    )
    g_out, p_out = tmp / f"{name}-gram.pt", tmp / f"{name}-pinv.pt"
    g = run_child(script, ["--child", "gram", "--shape", name, "--out", str(g_out)])
    repeats = 5 if pinv_n * shape.d <= 10_000_000 else 1
    p = run_child(
        script,
        [
            "--child",
            "pinv",
            "--shape",
            name,
            "--out",
            str(p_out),
            "--n",
            str(pinv_n),
            "--repeats",
            str(repeats),
        ],
    )
    build_s = g["accumulate_s"] + g["projection_s"]
    scale = shape.n / pinv_n  # SVD of an N×d matrix (N ≫ d): time and memory ∝ N
    pinv_s = p["pinv_s"] * scale
    pinv_extra = (p["rss_peak_mib"] - p["rss_before_mib"]) * scale
    gram_extra = g["rss_index_peak_mib"] - g["rss_before_mib"]
    note = "" if pinv_n == shape.n else f"  [EXTRAPOLATED ×{scale:.1f} from N={pinv_n:,}]"

    print("route                  CPU time           peak RSS − start RSS")
    print(f"pinv (F in memory)        {fmt_seconds(pinv_s):>12}   {pinv_extra:9,.0f} MiB{note}")
    print(
        f"  measured at N={pinv_n:,}: {fmt_seconds(p['pinv_s'])} "
        f"(runs {[round(t, 3) for t in p['pinv_times_s']]}), F alone "
        f"{p['rss_features_mib'] - p['rss_before_mib']:,.0f} MiB"
    )
    print(
        f"Gram index build          {fmt_seconds(build_s):>12}   {gram_extra:9,.0f} MiB"
        f"  (accumulate_gram {fmt_seconds(g['accumulate_s'])} + surgery_projection "
        f"{fmt_seconds(g['projection_s'])}; generating the stream took "
        f"{fmt_seconds(g['generate_s'])}, not counted)"
    )
    for k, seconds in g["request_s"].items():
        print(
            f"request k={int(k):>6,} (cached) {fmt_seconds(seconds):>10}"
            f"   gram(F_f) + apply_surgery; {pinv_s / seconds:,.0f}× faster than pinv"
        )
    if pinv_n == shape.n:
        diff = float((torch.load(g_out) - torch.load(p_out)).abs().max())
        where = "streamed Gram route vs explicit pinv route, same N"
    else:
        diff = p["max_abs_diff"]
        where = f"both routes on the same F of N={pinv_n:,}, in the pinv child"
    print(f"agreement (k={CHECK_FORGET:,}): max|W_pinv − W_Gram| = {diff:.2e} ({where})")
    bounded = gram_extra < 0.5 * mib(shape.n, shape.d)
    print(
        f"bounded memory: Gram route peak +{gram_extra:,.0f} MiB vs the "
        f"{mib(shape.n, shape.d):,.0f} MiB of an N×d array -> {'yes' if bounded else 'NO'}"
    )
    return {
        "pinv_s": pinv_s,
        "request_s": g["request_s"],
        "build_s": build_s,
        "diff": diff,
        "bounded": bounded,
        "pinv_extra": pinv_extra,
        "gram_extra": gram_extra,
        "extrapolated": pinv_n != shape.n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="pinv at the TinyImageNet shape on N=20,000, extrapolated",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--child", choices=("gram", "pinv"), help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=tuple(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)

    if args.child:
        shape = SHAPES[args.shape]
        if args.child == "gram":
            emit_result(gram_route(shape, args.out))
        else:
            emit_result(pinv_route(shape, args.n, args.repeats, args.out))
        return

    header("Naive PS algebra: Gram route vs explicit pinv route", args.threads)
    script = Path(__file__).resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            pinv_n = 20_000 if (args.quick and name == "tinyimagenet") else shape.n
            results[name] = report_shape(name, shape, pinv_n, script, Path(tmp))

    mnist, tiny = results["mnist"], results["tinyimagenet"]
    print("\n## ratios")
    for k, seconds in mnist["request_s"].items():
        ratio = mnist["pinv_s"] / seconds
        verdict = "met" if ratio >= 1000 else "MISSED"
        print(
            f"MNIST shape, cached request k={int(k):,}: {ratio:,.0f}× faster than pinv "
            f"(target ≥1,000×: {verdict})"
        )
    extra = " (pinv extrapolated)" if tiny["extrapolated"] else ""
    print(
        f"TinyImageNet shape: pinv {fmt_seconds(tiny['pinv_s'])} / {tiny['pinv_extra']:,.0f} "
        f"MiB vs Gram index {fmt_seconds(tiny['build_s'])} / {tiny['gram_extra']:,.0f} MiB"
        f"{extra}: {tiny['pinv_s'] / tiny['build_s']:,.1f}× time, bounded memory "
        f"{'met' if tiny['bounded'] else 'MISSED'}"
    )
    worst = max(mnist["diff"], tiny["diff"])
    print(f"routes agree: max abs diff {worst:.1e} ({'met' if worst < 1e-8 else 'MISSED'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
