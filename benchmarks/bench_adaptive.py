"""Benchmark: adaptive scanning against static paths of the same dose (val split, 512² crops).

For every val crop (min/max normalised to [0, 1]) and total coverage (1/20 and 1/40), the crop
is scanned by the simulated microscope with Poisson noise at ``--dose`` e⁻/px (the same
``NoiseModel`` for every scan) three ways — a static spiral, a static jittered grid, and
an adaptive scan (initial spiral over ``--initial-fraction`` of the budget, then ``--steps``
planned steps; the segment planner with ``--gain curvature``, the package's default
``planner="curvature"``, or ``reduction``, ``planner="uncertainty"``; the flybacks are
reported) — and each scan is completed by the same generator
(``complete_partial_scan(keep_measured=False)``, the protocol of ``eval_completion.py``: the
generator's estimate of the blurred truth everywhere, so noisy raw samples do not count against
the paths that measure more of the bright areas). Scored: RMSE (% of range) against the blurred
truth (5×5, σ 2.5 px, the generator's target), over the whole crop.

* bar: adaptive / static-spiral RMSE ≤ 0.90 on the mean over all crops, at 1/20 and 1/40;
* bar: ≤ 0.80 on the featureless crops — those where at least ``--featureless`` (30 %) of the
  32×32 blocks of the blurred truth vary by less than 2 % of the range (standard deviation):
  vacuum, flat support, thin edges; the fraction is reported per crop;
* bar: planning overhead ≤ 3 s per 512² frame for 8 steps on 2 threads (the adaptive scan's
  wall time minus the simulated acquisitions; the completions of the planner included);
* the static jittered grid is reported beside them.

Figures (``--figures N``): for the first N crops at the first coverage, the positions by step over
the specimen, the planner's gain map before steps 1, 4 and 7 with the segments it chose, and the
final completions of the adaptive scan and the static spiral. Figures of val crops show the data, which
must not be committed (they stay in ``--figure-dir``, default a temporary folder);
``--synthetic-figures`` draws the same figures for the built-in specimens, into ``--out``.

    python benchmarks/bench_adaptive.py [--dose 200] [--max-images N] [--per-image 2] [--figures 3]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

COVERAGES = (1 / 20, 1 / 40)
BLOCK = 32
FLAT_STD = 0.02


def featureless_fraction(blurred):
    """Fraction of 32×32 blocks of the blurred truth whose standard deviation is below 2 % of the range."""
    h, w = (np.asarray(blurred.shape) // BLOCK) * BLOCK
    blocks = blurred[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    return float(np.mean(blocks.std(axis=(1, 3)) < FLAT_STD))


def _scans(x, coverage, args, key):
    """{method: (partial scan signal, seconds of planning)} for one crop, and the planner's sigma maps."""
    import hyperspy.api as hs

    import hyperspy_partialscan as hps
    from hyperspy_partialscan.planners import UncertaintyPlanner, default_footprint, default_segment_length

    s = hs.signals.Signal2D(x)
    noise = {"dose": args.dose}
    out = {}
    for path in ("spiral", "jittered_grid"):
        out[f"static_{path}"] = (hps.to_partial_scan(s, path, coverage, seed=key, noise=noise), 0.0)
    seg = args.segment_length or default_segment_length(coverage)
    planner = UncertaintyPlanner(seg, model=args.plan_model or args.model, device="cpu", plan_bin=args.plan_bin,
                                 footprint=args.footprint * default_footprint(coverage), gain=args.gain)
    t = time.perf_counter()
    a = hps.adaptive_scan(s, coverage, planner=planner, initial_fraction=args.initial_fraction,
                          steps=args.steps, noise=noise, seed=key)
    out["adaptive"] = (a, time.perf_counter() - t)
    return out, planner.history


def _complete(p, model):
    import hyperspy_partialscan as hps

    return np.asarray(hps.complete_partial_scan(p, model=model, device="cpu", keep_measured=False,
                                                show_progressbar=False).data)


def _figure(label, x, blurred, scans, sigmas, completions, path):
    """The adaptive scan's steps over the specimen, the sigma maps that drove them, and both completions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = scans["adaptive"][0]
    md = a.metadata.Signal.Partial_scan
    pos, step = np.asarray(md.positions), np.asarray(md.step_of_position)
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    ax = axes[0, 0]
    ax.imshow(x, cmap="gray")
    sc = ax.scatter(pos[:, 1], pos[:, 0], c=step, s=0.6, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_title("adaptive positions by step")
    for k, ax in zip((0, 3, 6), axes[0, 1:]):
        if k < len(sigmas):
            im = ax.imshow(sigmas[k], cmap="magma")
            sel = step == k + 1
            ax.scatter(pos[sel, 1], pos[sel, 0], s=0.6, c="cyan")
            fig.colorbar(im, ax=ax)
            ax.set_title(f"gain before step {k + 1} (cyan: its segments)", fontsize=9)
        ax.axis("off")
    for ax, img, title in zip(axes[1], (blurred, completions["static_spiral"], completions["adaptive"],
                                        np.abs(completions["adaptive"] - blurred)),
                              ("blurred truth", "static spiral completion", "adaptive completion",
                               "|adaptive error|")):
        ax.imshow(img, cmap="gray" if "error" not in title else "magma")
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(label)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv=None):
    from hyperspy_partialscan.metrics import blur_target, rmse_percent

    p = C.base_parser(__doc__.splitlines()[0], model_task="completion")
    p.add_argument("--dose", type=float, default=200.0, help="electrons per pixel at full scale")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--per-image", type=int, default=2, help="crops per val image")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--initial-fraction", type=float, default=0.25)
    p.add_argument("--plan-bin", type=int, default=2)
    p.add_argument("--segment-length", type=int, default=None)
    p.add_argument("--plan-model", default=None,
                   help="generator of the planner (default --model; it needs a shipped uncertainty model)")
    p.add_argument("--gain", choices=["reduction", "sigma", "curvature"], default="curvature",
                   help="the planner's gain (curvature: planner='curvature', default; reduction: 'uncertainty')")
    p.add_argument("--footprint", type=float, default=1.0, help="planner footprint, times the package's default")
    p.add_argument("--coverages", type=C.parse_coverage, nargs="+", default=list(COVERAGES))
    p.add_argument("--featureless", type=float, default=0.3, help="featureless-block fraction of a featureless crop")
    p.add_argument("--figures", type=int, default=0, help="figures for this many val crops (first coverage)")
    p.add_argument("--figure-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_adaptive_figures",
                   help="where val-crop figures go (never the repository: they show the data)")
    p.add_argument("--synthetic-figures", action="store_true",
                   help="figures of the built-in specimens (nanoparticles, lattice) into --out")
    args = C.setup(p.parse_args(argv))
    if args.synthetic_figures:
        for k, kind in enumerate(("nanoparticles", "lattice")):
            x = C.specimen(kind, k)
            scans, sigmas = _scans(x, args.coverages[0], args, C.frame_key(kind, k))
            comp = {m: _complete(s, args.model) for m, (s, _) in scans.items()}
            _figure(f"built-in specimen: {kind}", x, blur_target(x), scans, sigmas, comp,
                    args.out / f"adaptive_{kind}.png")
    crops, skipped = C.val_crops(max_images=args.max_images, per_image=args.per_image, size=512, seed=args.seed)
    rows, figures = [], 0
    for label, x in crops:
        blurred = blur_target(x)
        flat = featureless_fraction(blurred)
        for coverage in args.coverages:
            scans, sigmas = _scans(x, coverage, args, C.frame_key(label, coverage))
            comp = {m: _complete(s, args.model) for m, (s, _) in scans.items()}
            row = {"crop": label, "coverage": C.coverage_label(coverage), "featureless_fraction": round(flat, 3),
                   "planning_s": scans["adaptive"][1]}
            row.update({f"rmse_{m}": rmse_percent(c, blurred) for m, c in comp.items()})
            row.update({f"coverage_{m}": float(s.coverage) for m, (s, _) in scans.items()})
            row["ratio"] = row["rmse_adaptive"] / row["rmse_static_spiral"]
            row["flybacks_adaptive"] = int(scans["adaptive"][0].metadata.Signal.Partial_scan.flybacks)
            rows.append(row)
            print(f"{label} {row['coverage']}: adaptive {row['rmse_adaptive']:.3f} spiral "
                  f"{row['rmse_static_spiral']:.3f} grid {row['rmse_static_jittered_grid']:.3f} "
                  f"ratio {row['ratio']:.3f} flat {flat:.2f} planning {row['planning_s']:.2f} s", flush=True)
            if figures < args.figures and coverage == args.coverages[0]:
                args.figure_dir.mkdir(parents=True, exist_ok=True)
                _figure(label, x, blurred, scans, sigmas, comp, args.figure_dir / f"adaptive_{figures}.png")
                figures += 1
    summary = []
    for cov in dict.fromkeys(r["coverage"] for r in rows):
        for group, sel in (("all", [r for r in rows if r["coverage"] == cov]),
                           ("featureless", [r for r in rows if r["coverage"] == cov
                                            and r["featureless_fraction"] >= args.featureless])):
            if not sel:
                continue
            mean = {m: float(np.mean([r[f"rmse_{m}"] for r in sel]))
                    for m in ("adaptive", "static_spiral", "static_jittered_grid")}
            bar = 0.9 if group == "all" else 0.8
            summary.append({"coverage": cov, "crops": group, "n": len(sel), **{f"rmse_{k}": v for k, v in mean.items()},
                            "adaptive/spiral": mean["adaptive"] / mean["static_spiral"],
                            "adaptive/grid": mean["adaptive"] / mean["static_jittered_grid"],
                            "bar": bar, "met": mean["adaptive"] / mean["static_spiral"] <= bar,
                            "planning_s_mean": float(np.mean([r["planning_s"] for r in sel])),
                            "flybacks_mean": float(np.mean([r["flybacks_adaptive"] for r in sel]))})
    print(C.markdown_table(summary))
    if args.out:
        C.write_csv(rows, args.out / "bench_adaptive_crops.csv")
        C.write_csv(summary, args.out / "bench_adaptive_summary.csv")
        C.write_report(args.out / "bench_adaptive.md", "Adaptive scanning vs static paths",
                       [("Summary", C.markdown_table(summary)), ("Per crop", C.markdown_table(rows)),
                        ("Skipped (smaller than 512²)", "\n".join(f"- {k}: {v}" for k, v in skipped) or "none")],
                       env=C.environment(args))
    return summary


if __name__ == "__main__":
    main()
