"""Benchmark: is the completion's per-pixel uncertainty calibrated? (val split, 512² crops)

For every val crop (min/max normalised to [0, 1]) and every case — spiral, jittered grid and random
at 1/20, spiral at 1/10 and 1/50 — the crop is scanned three ways: noise-free; Poisson noise at
``--dose`` e⁻/px with the dose given through HyperSpy's variance model in the metadata
(``Noise_properties.Variance_linear_model``, gain 1/dose); and the same noise without it (the noise
level is then estimated blindly from the samples). Each is completed with ``uncertainty=True`` and,
over the unsampled pixels, the error against the blurred truth is compared with sigma:

* fraction of pixels with |error| <= sigma (bar 0.60–0.76) and <= 2 sigma (bar 0.90–0.98);
* per crop, the predicted RMSE (root mean sigma²) within ±25 % of the actual RMSE (bar: ≥ 80 % of crops); for
  reference, the same fraction for a prediction that knows the truth: per case, the power law of the crops'
  RMS truth detail (below) fitted to their actual RMSE by least squares in log, on these very crops;
* Spearman rank correlation between mean sigma and actual RMSE over 32×32 blocks (bar: mean ≥ 0.6); for
  reference, the same correlation for a map that knows the truth: the local RMS of the blurred truth's
  detail finer than the sampling gaps (blurred truth minus itself smoothed at the detail factor's outer
  scale, 1.6 times the mean distance to the nearest sample, averaged over 16 px), i.e. what a perfect
  detail-based sigma could reach;
* a reliability diagram: binned predicted sigma against the observed RMS error;
* speed: a lazy stack completed with and without uncertainty, 2 threads (bar: ratio ≤ 1.5).

    python benchmarks/eval_uncertainty.py [--dose 100] [--max-images N] [--frames 8]
"""

from __future__ import annotations

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

CASES = (("spiral", 1 / 20), ("jittered_grid", 1 / 20), ("random", 1 / 20), ("spiral", 1 / 10), ("spiral", 1 / 50))
NOISE = ("clean", "dose_known", "dose_blind")
BLOCK = 32


def _scan(x, path, coverage, noise, dose, seed):
    """A partial scan of crop ``x`` as the user would have it in each noise condition."""
    import hyperspy.api as hs

    import hyperspy_partialscan as hps

    s = hs.signals.Signal2D(x)
    p = hps.to_partial_scan(s, path, coverage, seed=seed, noise=None if noise == "clean" else {"dose": dose})
    if noise != "clean":  # the user knows the dose through HyperSpy's variance model, or nothing
        del p.metadata.Signal.Partial_scan.noise
    if noise == "dose_known":
        p.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1.0 / dose)
        p.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    return p


def _spearman(a, b):
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if np.std(a) > 0 and np.std(b) > 0 else float("nan")


def _crop_row(label, x, path, coverage, noise, args, model, unc_model):
    import hyperspy_partialscan as hps
    from hyperspy_partialscan.metrics import blur_target

    p = _scan(x, path, coverage, noise, args.dose, args.seed)
    done, sigma = hps.complete_partial_scan(p, model=model, uncertainty=True, uncertainty_model=unc_model,
                                            device="cpu", show_progressbar=False)
    target = blur_target(x)
    err = done.data - target
    sig = sigma.data
    un = ~np.isfinite(p.data)
    e, s = err[un], sig[un]
    h, w = (x.shape[0] // BLOCK) * BLOCK, (x.shape[1] // BLOCK) * BLOCK
    blocks = lambda a: a[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)  # noqa: E731
    masked_err = np.where(un, err, np.nan)
    masked_sig = np.where(un, sig, np.nan)
    block_rmse = np.sqrt(np.nanmean(blocks(masked_err) ** 2, axis=(1, 3))).ravel()
    block_sig = np.nanmean(blocks(masked_sig), axis=(1, 3)).ravel()
    ok = np.isfinite(block_rmse) & np.isfinite(block_sig)
    truth_detail = C.truth_detail(target, un)
    block_truth = np.nanmean(blocks(np.where(un, truth_detail, np.nan)), axis=(1, 3)).ravel()
    return {"crop": label, "path": path, "coverage": round(coverage, 4), "noise": noise,
            "within_1": float(np.mean(np.abs(e) <= s)), "within_2": float(np.mean(np.abs(e) <= 2 * s)),
            "rmse": float(np.sqrt(np.mean(e**2))), "rmse_predicted": float(np.sqrt(np.mean(s**2))),
            "truth_detail_rms": float(np.sqrt(np.mean(truth_detail[un] ** 2))),
            "spearman_blocks": _spearman(block_sig[ok], block_rmse[ok]),
            "spearman_blocks_truth_detail": _spearman(block_truth[ok], block_rmse[ok]), "n": int(e.size)}, (e, s)


def _within_25pct_truth_detail(rows):
    """Fraction of crops within ±25 % when each crop's RMSE is predicted, with hindsight, from its truth detail.

    >>> rows = [{"rmse": 2.0 * d**0.5, "truth_detail_rms": d} for d in (0.1, 0.2, 0.4)]
    >>> _within_25pct_truth_detail(rows)
    1.0
    """
    ratios = C.power_law_log_ratios([r["rmse"] for r in rows], [r["truth_detail_rms"] for r in rows])
    return C.within_25pct(np.exp(ratios))


def _reliability(pairs, bins=12):
    e = np.concatenate([p[0] for p in pairs])
    s = np.concatenate([p[1] for p in pairs])
    edges = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
    return [{"sigma_bin": f"{edges[k]:.4f}–{edges[k + 1]:.4f}", "mean_sigma": float(np.mean(s[idx == k])),
             "observed_rms_error": float(np.sqrt(np.mean(e[idx == k] ** 2))), "pixels": int(np.sum(idx == k))}
            for k in range(len(edges) - 1) if np.any(idx == k)]


def _plot(rel, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for noise, rows in rel.items():
        ax.loglog([r["mean_sigma"] for r in rows], [r["observed_rms_error"] for r in rows], "o-", label=noise)
    lims = [min(r["mean_sigma"] for rows in rel.values() for r in rows) * 0.8,
            max(r["observed_rms_error"] for rows in rel.values() for r in rows) * 1.2]
    ax.plot(lims, lims, "k:", label="ideal")
    ax.set_xlabel("predicted sigma (binned)")
    ax.set_ylabel("observed RMS error")
    ax.set_title("Reliability of sigma (val, unsampled pixels)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _speed(args, model, unc_model):
    """Seconds per frame of a lazy stack, without and with uncertainty."""
    import hyperspy_partialscan as hps

    frames = [C.specimen("nanoparticles" if k % 2 else "lattice", k) for k in range(args.frames)]
    partials, _ = C.simulate_partials(frames, "spiral", 1 / 20, seed=args.seed)
    stack = C.stack_signal(partials, lazy=True)
    out = {}
    for label, kw in (("without", {}), ("with", {"uncertainty": True, "uncertainty_model": unc_model})):
        def run(kw=kw):
            r = hps.complete_partial_scan(stack, model=model, device="cpu", show_progressbar=False, **kw)
            import dask

            dask.compute(*(x.data for x in (r if isinstance(r, tuple) else (r,))))
        out[label] = C.median_time(run, repeats=2, warmup=1) / args.frames
    return out


def main(argv=None):
    p = C.base_parser(__doc__.splitlines()[0], model_task="completion")
    p.add_argument("--uncertainty-model", default=None)
    p.add_argument("--dose", type=float, default=100.0)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--frames", type=int, default=8, help="frames of the speed stack")
    p.add_argument("--skip-speed", action="store_true")
    args = C.setup(p.parse_args(argv))
    crops, skipped = C.val_crops(max_images=args.max_images, size=512, seed=args.seed)
    rows, pairs = [], {n: [] for n in NOISE}
    for label, x in crops:
        for path, coverage in CASES:
            for noise in NOISE:
                row, pair = _crop_row(label, x, path, coverage, noise, args, args.model, args.uncertainty_model)
                rows.append(row)
                pairs[noise].append(pair)
        print(f"{label}: done", flush=True)
    summary = []
    for path, coverage in CASES:
        for noise in NOISE:
            sel = [r for r in rows if r["path"] == path and r["coverage"] == round(coverage, 4) and r["noise"] == noise]
            n = np.array([r["n"] for r in sel], float)
            ratio = np.array([r["rmse_predicted"] / r["rmse"] for r in sel])
            summary.append({
                "path": path, "coverage": C.coverage_label(coverage), "noise": noise, "crops": len(sel),
                "within_sigma": float(np.average([r["within_1"] for r in sel], weights=n)),
                "within_2sigma": float(np.average([r["within_2"] for r in sel], weights=n)),
                "crops_rmse_within_25pct": C.within_25pct(ratio),
                "within_25pct_truth_detail": _within_25pct_truth_detail(sel),
                "spearman_blocks": float(np.nanmean([r["spearman_blocks"] for r in sel])),
                "spearman_truth_detail": float(np.nanmean([r["spearman_blocks_truth_detail"] for r in sel])),
            })
    for s in summary:
        s["pass"] = bool(0.60 <= s["within_sigma"] <= 0.76 and 0.90 <= s["within_2sigma"] <= 0.98
                         and s["crops_rmse_within_25pct"] >= 0.8 and s["spearman_blocks"] >= 0.6)
    rel = {n: _reliability(pairs[n]) for n in NOISE}
    _plot(rel, args.out / "eval_uncertainty_reliability.png")
    speed = None if args.skip_speed else _speed(args, args.model, args.uncertainty_model)
    C.write_csv(rows, args.out / "eval_uncertainty_crops.csv")
    C.write_csv(summary, args.out / "eval_uncertainty_summary.csv")
    sections = [
        ("Protocol", __doc__.split("\n\n")[1].replace("\n", " ")
         + f" {len(crops)} crops; skipped (smaller than 512²): {len(skipped)}."),
        ("Calibration (unsampled pixels)", C.markdown_table(summary, floatfmt=".3f")),
        ("Reliability diagram", "![reliability](eval_uncertainty_reliability.png)\n\n"
         + "\n".join(f"**{n}**\n\n" + C.markdown_table(rel[n], floatfmt=".4f") for n in NOISE)),
    ]
    if speed:
        sections.append(("Speed (lazy stack, 2 threads)",
                         f"{speed['without']:.3f} s per 512² frame without uncertainty, {speed['with']:.3f} s with "
                         f"(ratio {speed['with'] / speed['without']:.2f}; bar ≤ 1.5)."))
    C.write_report(args.out / "eval_uncertainty.md", "Calibration of the completion's uncertainty", sections,
                   C.environment(args))
    print(C.markdown_table(summary, floatfmt=".3f"))
    if speed:
        print(f"speed: {speed['without']:.3f} s/frame without, {speed['with']:.3f} with "
              f"({speed['with'] / speed['without']:.2f}x)")


if __name__ == "__main__":
    main()
