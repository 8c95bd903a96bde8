"""Evaluation: completion quality on the validation split (the protocol of issue 3).

Protocol
--------
* Data: the ``val`` split of the sample data; up to ``--per-image`` (2) crops of
  512x512 per image at fixed, seeded positions, each min/max normalised to
  [0, 1]. Images smaller than 512 are skipped (and listed).
* Partial scans: clean (noise-free) samples of each crop along a path at
  coverage 1/20, for the spiral, jittered_grid and random paths; every crop has
  its own seeded path.
* Completions: the generator (through ``complete_partial_scan`` on a stacked
  Signal2D, non-lazy, batched), nearest, linear (scipy griddata), cubic and
  biharmonic (scikit-image), all through the same engine.
* Metric: RMSE in % of the crop's range against the Gaussian-blurred crop
  (``blur_target``: 5x5 kernel, sigma 2.5 px; the seeds' protocol) and against
  the raw crop.
* Bars (blurred target): the generator is >= 30 % below linear for spiral and
  jittered_grid, >= 10 % below for random, below biharmonic on all three, and
  worse than linear on <= 10 % of the crops of each path.

Then the RMSE-vs-coverage curve (coverages 1/10 ... 1/100) for every path type
against nearest, linear and biharmonic, one crop per image (``--curve-per-image``),
with the published points of Ede & Beanland (2020) overlaid.

    python benchmarks/eval_completion.py                         # full protocol + curve
    python benchmarks/eval_completion.py --skip-curve
    python benchmarks/eval_completion.py --max-images 2 --coverages 0.05 --threads 1   # smoke test
    # a new model, classical results of an earlier full run reused (minutes instead of ~50):
    python benchmarks/eval_completion.py --model PATH --reuse-classical \
        benchmarks/results/completion/eval_completion_crops.csv \
        benchmarks/results/completion/eval_completion_curve_crops.csv
"""

from __future__ import annotations

import time
from pathlib import Path

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

PROTOCOL_PATHS = ("spiral", "jittered_grid", "random")
MAIN_METHODS = ("generator", "nearest", "linear", "cubic", "biharmonic")
CURVE_METHODS = ("generator", "nearest", "linear", "biharmonic")
CURVE_COVERAGES = ("1/10", "1/15", "1/20", "1/30", "1/50", "1/70", "1/100")
#: minimum improvement of the generator over linear interpolation (blurred target), per path
BARS_VS_LINEAR = {"spiral": 30.0, "jittered_grid": 30.0, "random": 10.0}
MAX_WORSE_THAN_LINEAR = 10.0  # % of crops
#: Ede & Beanland (2020), their data and networks: (1/coverage, RMSE %), endpoints only
PUBLISHED = {"spiral": [(17.9, 3.77), (87.0, 6.21)], "grid": [(16.0, 3.13), (96.9, 4.34)]}
PUBLISHED_LABEL = "Ede & Beanland 2020 (their data)"
TIE_PCT = 1e-4  # RMSE differences (in % of range) below this count as ties


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0], model_task="completion", threads=2)
    p.add_argument("--max-images", type=int, default=None, help="use at most this many val images")
    p.add_argument("--per-image", type=int, default=2, help="crops per image (main protocol)")
    p.add_argument("--size", type=int, default=512, help="crop side")
    p.add_argument("--coverage", type=C.parse_coverage, default=1 / 20, help="coverage of the main protocol")
    p.add_argument("--paths", nargs="+", default=None,
                   help="path types (default: all); the main protocol uses those among "
                        + ", ".join(PROTOCOL_PATHS))
    p.add_argument("--methods", nargs="+", default=list(MAIN_METHODS), choices=MAIN_METHODS,
                   help="methods of the main protocol")
    p.add_argument("--coverages", nargs="+", type=C.parse_coverage, default=None,
                   help="coverages of the curve, as 1/20, 0.05 or 20 (default: " + " ".join(CURVE_COVERAGES) + ")")
    p.add_argument("--curve-per-image", type=int, default=1, help="crops per image for the curve")
    p.add_argument("--curve-biharmonic", choices=["all", "none"], default="all",
                   help="biharmonic on the curve ('none': skip it, it is the slowest method by far)")
    p.add_argument("--skip-curve", action="store_true", help="main protocol only")
    p.add_argument("--batch-size", type=int, default=None, help="generator frames per batch (default: package)")
    p.add_argument("--reuse-classical", nargs="+", default=None, metavar="CSV",
                   help="CSVs of an earlier run with the same seed, size and data: per-crop "
                        "(eval_completion_crops.csv, eval_completion_curve_crops.csv) or a curve summary "
                        "(eval_completion_curve.csv); their classical results are reused and only the generator "
                        "is run (the classical methods do not depend on the model)")
    return p.parse_args(argv)


def coverage_key(coverage):
    """Cache key of a coverage: rounded as the CSVs store it, so reused rows match (1/15 -> 0.066667)."""
    return f"{round(float(coverage), 6):.6g}"


class Evaluator:
    """Completes crops along seeded paths and caches per-crop RMSEs, keyed by (crop, path, coverage, method)."""

    def __init__(self, args, model_ref):
        self.args, self.model_ref = args, model_ref
        self.cache, self.coverage_measured, self.seconds = {}, {}, {}
        self.reused = 0
        self.curve_summary = {}  # (path, coverage key, method) -> summary row of an earlier curve

    def reuse(self, csv_paths):
        """Seed the cache with the classical (non-generator) results of earlier runs (CSV values: 6 decimals).

        Per-crop CSVs fill the per-crop cache; a curve summary
        (``eval_completion_curve.csv``, one mean per path, coverage and method)
        supplies whole curve points for methods without per-crop rows.
        """
        import csv

        for path in csv_paths:
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    if r["method"] == "generator":
                        continue
                    if "crop" not in r:  # a curve summary
                        row = {k: (r[k] if k in ("path", "coverage_label", "method") else
                                   int(r[k]) if k == "crops" else float(r[k]))
                               for k in ("path", "coverage", "coverage_label", "inv_coverage", "coverage_measured",
                                         "method", "rmse_blurred", "rmse_raw", "crops")}
                        # keyed by the label ("1/15"): the CSV's coverage is rounded to 6 decimals
                        self.curve_summary[(r["path"], r["coverage_label"], r["method"])] = row
                        self.reused += 1
                        continue
                    ck = coverage_key(float(r["coverage"]))
                    self.cache[(r["crop"], r["path"], ck, r["method"])] = (float(r["rmse_blurred"]),
                                                                          float(r["rmse_raw"]))
                    self.coverage_measured[(r["crop"], r["path"], ck)] = float(r["coverage_measured"])
                    self.reused += 1

    def run(self, crops, path, coverage, methods):
        """Per-crop rows for ``crops`` (label, crop, blurred) along ``path`` at ``coverage``."""
        ck = coverage_key(coverage)
        missing = [m for m in methods if any((c[0], path, ck, m) not in self.cache for c in crops)]
        if missing:
            todo = [c for c in crops if any((c[0], path, ck, m) not in self.cache for m in missing)]
            keys = [C.frame_key(label, path) for label, _, _ in todo]
            partials, cov = C.simulate_partials([x for _, x, _ in todo], path, coverage, self.args.seed, keys)
            for (label, _, _), c in zip(todo, cov):
                self.coverage_measured[(label, path, ck)] = c
            for m in missing:
                need = [i for i, c in enumerate(todo) if (c[0], path, ck, m) not in self.cache]
                t0 = time.perf_counter()
                if m == "generator":  # batched network: one dask worker, torch uses the threads
                    out = C.complete_stack(partials[need], m, model=self.model_ref, batch_size=self.args.batch_size,
                                           workers=1)
                else:  # per-frame classical methods: one frame per block, a worker per thread
                    out = C.complete_stack(partials[need], m, batch_size=1, workers=self.args.threads)
                self.seconds[m] = self.seconds.get(m, 0.0) + time.perf_counter() - t0
                self.seconds[m + "_frames"] = self.seconds.get(m + "_frames", 0) + len(need)
                for i, y in zip(need, out):
                    label, x, blurred = todo[i]
                    self.cache[(label, path, ck, m)] = (C.rmse_percent(y, blurred), C.rmse_percent(y, x))
        rows = []
        for label, _, _ in crops:
            for m in methods:
                rb, rr = self.cache[(label, path, ck, m)]
                rows.append({"crop": label, "path": path, "coverage": coverage,
                             "coverage_label": C.coverage_label(coverage),
                             "coverage_measured": self.coverage_measured[(label, path, ck)], "method": m,
                             "rmse_blurred": rb, "rmse_raw": rr})
        return rows


def summarise_main(rows, paths, methods):
    """Per path: mean RMSEs per method, improvement over linear, fraction worse than linear, bars."""
    out, bars = [], []
    for path in paths:
        sel = [r for r in rows if r["path"] == path]
        crops = sorted({r["crop"] for r in sel})
        get = {(r["crop"], r["method"]): r for r in sel}
        s = {"path": path, "crops": len(crops)}
        for m in methods:
            s[f"{m}_blurred"] = float(np.mean([get[c, m]["rmse_blurred"] for c in crops]))
            s[f"{m}_raw"] = float(np.mean([get[c, m]["rmse_raw"] for c in crops]))
        if "generator" in methods and "linear" in methods:
            for t in ("blurred", "raw"):
                s[f"improvement_vs_linear_{t}_pct"] = 100 * (1 - s[f"generator_{t}"] / s[f"linear_{t}"])
                s[f"worse_than_linear_{t}_pct"] = 100 * float(np.mean(  # ties (float32 rounding) are not worse
                    [get[c, "generator"][f"rmse_{t}"] > get[c, "linear"][f"rmse_{t}"] + TIE_PCT for c in crops]))
            if path in BARS_VS_LINEAR:
                need = BARS_VS_LINEAR[path]
                bars.append({"path": path, "bar": f"generator >= {need:g} % below linear",
                             "value": f"{s['improvement_vs_linear_blurred_pct']:.1f} %",
                             "pass": s["improvement_vs_linear_blurred_pct"] >= need})
                bars.append({"path": path, "bar": f"worse than linear on <= {MAX_WORSE_THAN_LINEAR:g} % of crops",
                             "value": f"{s['worse_than_linear_blurred_pct']:.1f} %",
                             "pass": s["worse_than_linear_blurred_pct"] <= MAX_WORSE_THAN_LINEAR})
        if "generator" in methods and "biharmonic" in methods and path in BARS_VS_LINEAR:
            bars.append({"path": path, "bar": "generator below biharmonic",
                         "value": f"{s['generator_blurred']:.3f} vs {s['biharmonic_blurred']:.3f} %",
                         "pass": s["generator_blurred"] < s["biharmonic_blurred"]})
        out.append(s)
    return out, bars


def summarise_curve(rows, paths):
    """Mean RMSE per (path, coverage, method), in the order of ``paths``, then decreasing coverage."""
    groups = {}
    for r in rows:
        groups.setdefault((r["path"], r["coverage"], r["method"]), []).append(r)
    out = []
    for (path, cov, m), rs in groups.items():
        out.append({"path": path, "coverage": cov, "coverage_label": C.coverage_label(cov), "inv_coverage": 1 / cov,
                    "coverage_measured": float(np.mean([r["coverage_measured"] for r in rs])), "method": m,
                    "rmse_blurred": float(np.mean([r["rmse_blurred"] for r in rs])),
                    "rmse_raw": float(np.mean([r["rmse_raw"] for r in rs])), "crops": len(rs)})
    return sorted(out, key=lambda r: (list(paths).index(r["path"]), -r["coverage"], r["method"]))


def curve_table(curve, methods, target="blurred"):
    wide = {}
    for r in curve:
        key = (r["path"], r["coverage"])
        wide.setdefault(key, {"path": r["path"], "coverage": r["coverage_label"],
                              "measured": round(r["coverage_measured"], 4), "crops": r["crops"]})
        wide[key][r["method"]] = r[f"rmse_{target}"]
    return C.markdown_table(list(wide.values()), ["path", "coverage", "measured", "crops"] + list(methods),
                            floatfmt=".3f")


def plot_curve(curve, paths, methods, png, note):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(paths)
    cols = min(4, n)
    rows_ = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows_, cols, figsize=(3.6 * cols, 3.0 * rows_), squeeze=False, sharey=True)
    styles = {"generator": ("tab:red", "o"), "nearest": ("tab:gray", "v"), "linear": ("tab:blue", "s"),
              "biharmonic": ("tab:green", "^"), "cubic": ("tab:purple", "D")}
    for ax, path in zip(axes.flat, paths):
        for m in methods:
            pts = sorted((r["inv_coverage"], r["rmse_blurred"]) for r in curve
                         if r["path"] == path and r["method"] == m)
            if pts:
                color, marker = styles.get(m, (None, "o"))
                ax.plot(*zip(*pts), marker=marker, ms=4, color=color, label=m, zorder=3 if m == "generator" else 2)
        if path in PUBLISHED:
            x, y = zip(*PUBLISHED[path])
            ax.plot(x, y, ls="none", marker="*", ms=11, color="black", label=PUBLISHED_LABEL)
        ax.set_title(path)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([10, 15, 20, 30, 50, 70, 100]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("1 / coverage")
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:, 0]:
        ax.set_ylabel("RMSE (% of range, blurred target)")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if n < axes.size:  # a free panel: legend and note there
        free = list(axes.flat)[n]
        free.legend(handles.values(), handles.keys(), loc="center", frameon=False)
        free.text(0.5, 0.0, note, ha="center", va="bottom", fontsize=7, wrap=True, transform=free.transAxes)
        fig.tight_layout()
    else:
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), frameon=False,
                   fontsize=8)
        fig.text(0.5, 0.995, note, ha="center", va="top", fontsize=7)
        fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(argv=None):
    args = C.setup(parse_args(argv))
    from hyperspy_partialscan.metrics import blur_target
    from hyperspy_partialscan.paths import PATHS

    t_start = time.perf_counter()
    paths = args.paths or list(PATHS)
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise SystemExit(f"unknown path(s) {sorted(unknown)}; choose from {', '.join(PATHS)}")
    model = C.resolve_model(args.model, "completion") if "generator" in args.methods else None
    info = C.model_info(model) if model else None
    ev = Evaluator(args, str(model.path) if model else None)
    if args.reuse_classical:
        ev.reuse(args.reuse_classical)
        print(f"reusing {ev.reused} classical results from {', '.join(args.reuse_classical)}", flush=True)

    per = max(args.per_image, 0 if args.skip_curve else args.curve_per_image)
    crops, skipped = C.val_crops(max_images=args.max_images, per_image=per, size=args.size, seed=args.seed)
    crops = [(label, x, blur_target(x)) for label, x in crops]
    n_images = len({label.split("#")[0] for label, _, _ in crops})
    main_crops = [c for c in crops if int(c[0].split("#")[1].split("@")[0]) < args.per_image]
    print(f"{len(main_crops)} crops of {args.size}² from {n_images} val images; skipped (smaller than "
          f"{args.size}): {', '.join(f'{lab} {shape}' for lab, shape in skipped) or 'none'}", flush=True)
    if info:
        print(f"generator model: {info['name']} (sha256 {info['sha256']}…, iterations {info['iterations']})")

    # ---------------------------------------------------------------- main protocol
    main_paths = [p for p in PROTOCOL_PATHS if p in paths]
    main_rows = []
    for path in main_paths:
        C.banner(f"main protocol: {path} at coverage {C.coverage_label(args.coverage)}")
        t0 = time.perf_counter()
        main_rows += ev.run(main_crops, path, args.coverage, args.methods)
        print(f"  done in {C.human_seconds(time.perf_counter() - t0)}", flush=True)
    summary, bars = summarise_main(main_rows, main_paths, args.methods)
    t_main = time.perf_counter() - t_start

    # ---------------------------------------------------------------- curve
    curve, curve_methods, t_curve, reused_points = [], [], 0.0, []
    if not args.skip_curve:
        t1 = time.perf_counter()
        coverages = args.coverages or [C.parse_coverage(c) for c in CURVE_COVERAGES]
        curve_methods = [m for m in CURVE_METHODS if (m != "biharmonic" or args.curve_biharmonic == "all")
                         and (m != "generator" or model is not None)]
        curve_crops = [c for c in crops if int(c[0].split("#")[1].split("@")[0]) < args.curve_per_image]
        curve_rows = []
        for path in paths:
            for cov in coverages:
                t0 = time.perf_counter()
                # whole points reused from an earlier curve summary (same crops), unless per-crop rows exist
                old = {m: ev.curve_summary.get((path, C.coverage_label(cov), m)) for m in curve_methods
                       if m != "generator"}
                old = {m: r for m, r in old.items() if r is not None and r["crops"] == len(curve_crops)
                       and any((c[0], path, coverage_key(cov), m) not in ev.cache for c in curve_crops)}
                # with this run's coverage (the CSV's is rounded), so the point joins the generator's row
                reused_points += [dict(r, coverage=cov) for r in old.values()]
                curve_rows += ev.run(curve_crops, path, cov, [m for m in curve_methods if m not in old])
                print(f"  curve {path:>13} {C.coverage_label(cov):>6}: {C.human_seconds(time.perf_counter() - t0)}"
                      + (f" (reused: {', '.join(old)})" if old else ""), flush=True)
        curve = summarise_curve(curve_rows, paths)
        if reused_points:
            curve = sorted(curve + reused_points,
                           key=lambda r: (list(paths).index(r["path"]), -r["coverage"], r["method"]))
        C.write_csv(curve_rows, args.out / "eval_completion_curve_crops.csv")
        t_curve = time.perf_counter() - t1
    total = time.perf_counter() - t_start

    # ---------------------------------------------------------------- outputs
    out = args.out
    C.write_csv(main_rows, out / "eval_completion_crops.csv")
    C.write_csv(summary, out / "eval_completion_summary.csv")
    cols_b = [f"{m}_blurred" for m in args.methods]
    cols_r = [f"{m}_raw" for m in args.methods]
    extra = [k for k in ("improvement_vs_linear_blurred_pct", "worse_than_linear_blurred_pct")
             if summary and k in summary[0]]
    t_blur = C.markdown_table(summary, ["path", "crops"] + cols_b + extra, floatfmt=".3f",
                              headers=["path", "crops"] + list(args.methods)
                              + ["gen. vs linear (%)", "gen. worse than linear (% crops)"][: len(extra)])
    extra_r = [k for k in ("improvement_vs_linear_raw_pct", "worse_than_linear_raw_pct") if summary and k in summary[0]]
    t_raw = C.markdown_table(summary, ["path", "crops"] + cols_r + extra_r, floatfmt=".3f",
                             headers=["path", "crops"] + list(args.methods)
                             + ["gen. vs linear (%)", "gen. worse than linear (% crops)"][: len(extra_r)])
    t_bars = (C.markdown_table(bars, ["path", "bar", "value", "pass"]) if bars
              else "(bars need generator, linear and biharmonic)\n")
    all_pass = bool(bars) and all(b["pass"] for b in bars)
    incomplete = [m for m in ("generator", "linear", "biharmonic") if m not in args.methods]
    incomplete += [p for p in PROTOCOL_PATHS if p not in main_paths]
    speed = {m: ev.seconds[m] / ev.seconds[m + "_frames"] for m in MAIN_METHODS if ev.seconds.get(m + "_frames")}
    t_speed = C.markdown_table([{"method": m, "s_per_frame": s} for m, s in speed.items()],
                               headers=["method", "seconds per 512² frame (this run, all frames)"])
    notes = []
    if skipped:
        notes.append("Skipped (smaller than the crop): "
                     + ", ".join(f"`{lab}` {shape}" for lab, shape in skipped) + ".")
    if ev.reused:
        notes.append(f"Classical results reused from an earlier run of this script with the same seed and size "
                     f"({ev.reused} rows: {', '.join(Path(p).name for p in args.reuse_classical)}); "
                     "the generator was run afresh.")
    if info and (model.config.get("interim") or model.config.get("random_init")):
        notes.append(f"**The generator is an interim/random model ({info['name']}): not the shipped figures.**")
    sections = [
        ("Setup", f"{len(main_crops)} crops of {args.size}² from {n_images} val images (up to {args.per_image} per "
                  f"image, seed {args.seed}); clean partial scans at coverage {C.coverage_label(args.coverage)}; "
                  + (f"generator `{info['name']}` (sha256 {info['sha256']}…, {info['iterations']} iterations). "
                     if info else "") + " ".join(notes)),
        ("RMSE (% of range) against the blurred crop (5×5, σ 2.5: the seeds' protocol)", t_blur),
        ("RMSE (% of range) against the raw crop", t_raw),
        ("Bars (blurred target)", t_bars + f"\nAll bars met: **{'yes' if all_pass else 'no'}**"
         + (f" (incomplete check: not evaluated: {', '.join(incomplete)})" if incomplete else "")),
        ("Time", t_speed + f"\nMain protocol {C.human_seconds(t_main)}, curve {C.human_seconds(t_curve)}, "
                           f"total {C.human_seconds(total)} (torch threads {args.threads})."),
    ]
    if curve:
        C.write_csv(curve, out / "eval_completion_curve.csv")
        curve_note = (f"{args.curve_per_image} crop(s) per image ({len(curve_crops)} crops per point); "
                      + ("biharmonic included" if "biharmonic" in curve_methods else
                         "biharmonic skipped (--curve-biharmonic none: too slow)"))
        if reused_points:
            curve_note += (f"; {len(reused_points)} classical points ("
                           + ", ".join(sorted({r['method'] for r in reused_points}))
                           + ") reused from an earlier run's curve summary (same crops and paths)")
        plot_curve(curve, paths, curve_methods, out / "eval_completion_curve.png", curve_note)
        sections.append(("RMSE vs coverage (blurred target)",
                         curve_table(curve, curve_methods) + f"\n{curve_note}. Published endpoints ({PUBLISHED_LABEL}, "
                         "their own data and networks, not comparable crop for crop): spiral 3.77 % at 1/17.9 … "
                         "6.21 % at 1/87.0; grid 3.13 % at 1/16 … 4.34 % at 1/96.9.\n\n"
                         "![RMSE vs coverage](eval_completion_curve.png)"))
        sections.append(("RMSE vs coverage (raw target)", curve_table(curve, curve_methods, "raw")))
    env = C.environment(args)
    env["model"] = info
    C.write_report(out / "eval_completion.md", "Completion quality on the validation split", sections, env)

    C.banner("mean RMSE (% of range), blurred target")
    print(t_blur)
    C.banner("mean RMSE (% of range), raw target")
    print(t_raw)
    C.banner("bars")
    print(t_bars)
    print(f"all bars met: {'yes' if all_pass else 'no'}"
          + (f" (incomplete check: not evaluated: {', '.join(incomplete)})" if incomplete else ""))
    if curve:
        C.banner("RMSE vs coverage, blurred target (" + curve_note + ")")
        print(curve_table(curve, curve_methods))
    print(t_speed)
    print(f"time: main protocol {C.human_seconds(t_main)}, curve {C.human_seconds(t_curve)}, total "
          f"{C.human_seconds(total)}")
    written = ["eval_completion.md", "eval_completion_summary.csv", "eval_completion_crops.csv"]
    if curve:
        written += ["eval_completion_curve.csv", "eval_completion_curve_crops.csv", "eval_completion_curve.png"]
    print("written: " + ", ".join(str(out / w) for w in written))
    return summary, bars, curve


if __name__ == "__main__":
    main()
