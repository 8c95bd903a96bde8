"""Benchmark: time to generate every scan path, and its measured coverage.

For each path in ``hyperspy_partialscan.paths.PATHS`` and each frame size, the
median wall time of ``generate_path(name, (n, n), coverage, seed)`` over
``--repeats`` calls (each with its own seed) and the measured coverage of the
rasterised mask (not timed).

    python benchmarks/bench_paths.py                      # 512² and 4096², coverage 1/20
    python benchmarks/bench_paths.py --sizes 512 --repeats 1
"""

from __future__ import annotations

import time

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 4096], help="frame sides in pixels")
    p.add_argument("--coverage", type=float, default=1 / 20, help="requested coverage")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per path and size (median reported)")
    p.add_argument("--paths", nargs="+", default=None, help="paths to time (default: all)")
    return p.parse_args(argv)


def main(argv=None):
    args = C.setup(parse_args(argv))
    from hyperspy_partialscan.paths import PATHS, generate_path

    names = args.paths or list(PATHS)
    rows = []
    t_start = time.perf_counter()
    for size in args.sizes:
        for name in names:
            times, covs, npos = [], [], []
            for k in range(args.repeats):
                seed = args.seed + k
                t0 = time.perf_counter()
                path = generate_path(name, (size, size), args.coverage, seed)
                times.append(time.perf_counter() - t0)
                covs.append(path.coverage)
                npos.append(len(path.positions))
            rows.append({
                "path": name,
                "size": size,
                "coverage_requested": args.coverage,
                "coverage_measured": float(np.mean(covs)),
                "coverage_error_pct": float(100 * (np.mean(covs) / args.coverage - 1)),
                "positions": int(np.median(npos)),
                "median_s": float(np.median(times)),
                "min_s": float(np.min(times)),
                "max_s": float(np.max(times)),
                "repeats": args.repeats,
            })
            r = rows[-1]
            print(f"{name:>14} {size:>5}²  {C.human_seconds(r['median_s']):>10}  coverage {r['coverage_measured']:.4f}",
                  flush=True)
    total = time.perf_counter() - t_start

    C.write_csv(rows, args.out / "bench_paths.csv")
    show = [dict(r, median=C.human_seconds(r["median_s"]), coverage_measured=round(r["coverage_measured"], 5),
                 coverage_error_pct=round(r["coverage_error_pct"], 2) + 0.0) for r in rows]
    table = C.markdown_table(show, ["path", "size", "median", "coverage_measured", "coverage_error_pct", "positions"],
                             headers=["path", "frame", "median time", "measured coverage", "error (%)", "positions"])
    env = C.environment(args)
    C.write_report(args.out / "bench_paths.md", "Scan-path generation time", [
        ("Protocol", f"`generate_path(name, (n, n), {args.coverage:.4g}, seed)`, median over {args.repeats} seeds "
                     f"(single thread); measured coverage = fraction of pixels of the rasterised mask, mean over "
                     f"the seeds."),
        ("Results", table),
    ], env)
    C.banner(f"scan paths at coverage {args.coverage:.4g} (median of {args.repeats}; total {C.human_seconds(total)})")
    print(table)
    print(f"written: {args.out / 'bench_paths.csv'}, {args.out / 'bench_paths.md'}")
    return rows


if __name__ == "__main__":
    main()
