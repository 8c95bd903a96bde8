"""Evaluation: denoising quality on the validation split (the protocol of issue 4).

Protocol
--------
* Data: the ``val`` split; up to ``--per-image`` (2) crops of 512x512 per image
  (the same seeded crops as ``eval_completion.py``), min/max normalised to [0, 1].
* Noise: Poisson shot noise, ``degrade(crop, FrameNoise(dose=d))`` with d = 10,
  50 and 200 electrons per pixel at full scale (a seeded draw per crop and dose).
* Methods, scored by PSNR and SSIM (``data_range=1``) against the clean crop:
  - ``network``: the shipped denoiser, ``denoise(..., "generator")`` (noise
    level estimated blindly unless ``--noise-level known``);
  - ``finetuned``: that network fine-tuned self-supervised
    (``fit_denoiser(..., method=--finetune-method, epochs=--finetune-epochs)``,
    SURE by default, keeping the epoch with the lowest SURE estimate) on the
    noisy val crops of that dose only, then applied to them;
  - ``gaussian_best``: Gaussian filter with the sigma chosen *with hindsight*
    per crop (grid search against the clean crop: an upper bound for it);
  - ``nl_means`` and ``tv``: scikit-image filters with parameters estimated
    from the noisy frame (the package's defaults).
* Bars: the network beats the best classical filter by >= 2 dB PSNR at every
  dose; fine-tuning does not make it worse on average; the network takes
  <= 0.5 s per 512x512 frame on 2 CPU threads.

    python benchmarks/eval_denoising.py                         # full protocol
    python benchmarks/eval_denoising.py --max-images 2 --doses 10 --finetune-epochs 1 --threads 1   # smoke test
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

CLASSICAL = ("gaussian_best", "nl_means", "tv")
MARGIN_DB = 2.0
MAX_SECONDS_PER_FRAME = 0.5
SIGMAS = tuple(np.round(np.geomspace(0.3, 8.0, 30), 4))


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0], model_task="denoising", threads=2)
    p.add_argument("--max-images", type=int, default=None, help="use at most this many val images")
    p.add_argument("--per-image", type=int, default=2, help="crops per image")
    p.add_argument("--size", type=int, default=512, help="crop side")
    p.add_argument("--doses", type=float, nargs="+", default=[10, 50, 200],
                   help="electrons per pixel at full scale")
    p.add_argument("--finetune-epochs", type=int, default=10,
                   help="epochs of self-supervised fine-tuning per dose (0: skip fine-tuning)")
    p.add_argument("--finetune-method", choices=["sure", "blind_spot"], default="sure",
                   help="self-supervised fine-tuning objective (fit_denoiser's method)")
    p.add_argument("--noise-level", choices=["blind", "known"], default="blind",
                   help="network noise-level input: blind estimate, or the known Poisson variance model "
                        "(variance = signal / dose) in the metadata")
    p.add_argument("--timing-repeats", type=int, default=5, help="timed single-frame network calls (median)")
    p.add_argument("--batch-size", type=int, default=None, help="network frames per batch (default: package)")
    return p.parse_args(argv)


def noise_floor_psnr(noisy, clean):
    """PSNR that no denoiser can exceed on average when the reference itself carries white noise.

    The val "clean" crops are experimental images with their own noise (sigma_r,
    estimated blindly, Immerkaer 1996). A denoiser sees reference + added noise
    (variance sigma_a^2) and cannot tell the two white components apart: the
    best it can do on them is the Wiener estimate, whose error variance is
    sigma_r^2 sigma_a^2 / (sigma_r^2 + sigma_a^2). Structure is assumed
    perfectly recovered, so this is an upper bound (an estimate: sigma_r is
    itself estimated and JPEG-exported references do not have white noise).
    """
    from hyperspy_partialscan.noise import estimate_sigma

    sr2 = estimate_sigma(clean) ** 2
    sa2 = float(np.mean((np.asarray(noisy, np.float64) - clean) ** 2))
    return float(-10 * np.log10(max(sr2 * sa2 / (sr2 + sa2), 1e-20)))


def _metrics(estimate, clean):
    from skimage.metrics import structural_similarity

    from hyperspy_partialscan.metrics import psnr

    return psnr(estimate, clean), float(structural_similarity(clean, np.asarray(estimate, np.float64),
                                                              data_range=1.0))


def gaussian_best(noisy, clean):
    """Gaussian filter with the hindsight-best sigma (max PSNR against ``clean``) from :data:`SIGMAS`."""
    from hyperspy_partialscan.filters import gaussian_filter
    from hyperspy_partialscan.metrics import psnr

    best = None
    for s in SIGMAS:
        y = gaussian_filter(noisy, s)
        v = psnr(y, clean)
        if best is None or v > best[0]:
            best = (v, s, y)
    return best[2], best[1]


def network_seconds(model_ref, frame, repeats, device="cpu"):
    """Median seconds of ``denoise`` on a one-frame 512² signal (after one warm-up call)."""
    run = lambda: C.denoise_stack(frame[None], "generator", model=model_ref, workers=1, device=device)  # noqa: E731
    return C.median_time(run, repeats=repeats, warmup=1)


def plot_example(panels, png, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 3.0))
    for ax, (name, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img[:256, :256], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(argv=None):
    args = C.setup(parse_args(argv))
    import torch

    from hyperspy_partialscan.denoising import fit_denoiser
    from hyperspy_partialscan.noise import FrameNoise, degrade

    t_start = time.perf_counter()
    model = C.resolve_model(args.model, "denoising")
    info = C.model_info(model)
    model_ref = str(model.path)
    crops, skipped = C.val_crops(max_images=args.max_images, per_image=args.per_image, size=args.size,
                                 seed=args.seed)
    labels = [lab for lab, _ in crops]
    clean = np.stack([x for _, x in crops])
    print(f"{len(crops)} crops of {args.size}² from {len({lab.split('#')[0] for lab in labels})} val images; "
          f"skipped: {', '.join(f'{lab} {shape}' for lab, shape in skipped) or 'none'}", flush=True)
    print(f"denoiser: {info['name']} (sha256 {info['sha256']}…, iterations {info['iterations']})", flush=True)

    rows, example, seconds, ft_info = [], {}, {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="partialscan_evaldenoise_"))
    try:
        for dose in args.doses:
            C.banner(f"dose {dose:g} e-/px")
            noisy = np.stack([degrade(x, FrameNoise(dose=dose), np.random.default_rng([args.seed, C.frame_key(lab),
                                                                                     int(dose * 1000)]))
                              for lab, x in crops])
            meta = None
            if args.noise_level == "known":  # variance = signal / dose on this intensity scale
                meta = {"Signal.Noise_properties.Variance_linear_model":
                        {"gain_factor": 1.0 / dose, "gain_offset": 0.0}}
            results = {}
            t0 = time.perf_counter()
            results["network"] = C.denoise_stack(noisy, "generator", model=model_ref, batch_size=args.batch_size,
                                                 workers=1, metadata=meta)
            seconds["network"] = seconds.get("network", 0) + time.perf_counter() - t0
            if args.finetune_epochs > 0:
                t0 = time.perf_counter()
                init = "default" if args.model is None else model_ref
                ft = fit_denoiser(C.stack_signal(noisy, metadata=meta), init=init, method=args.finetune_method,
                                  epochs=args.finetune_epochs, output=tmp / f"finetuned_dose{dose:g}", seed=args.seed,
                                  show_progressbar=False)
                t_fit = time.perf_counter() - t0
                t0 = time.perf_counter()
                results["finetuned"] = C.denoise_stack(noisy, "generator", model=str(ft.path),
                                                       batch_size=args.batch_size, workers=1, metadata=meta)
                seconds["finetuned"] = seconds.get("finetuned", 0) + time.perf_counter() - t0
                tr = ft.config.get("training", {})
                ft_info[dose] = {"fit_seconds": t_fit, "iterations": tr.get("iterations"),
                                 "first_loss": tr.get("first_loss"), "final_running_loss": tr.get("final_running_loss"),
                                 "sure_start": tr.get("sure_start"), "sure_best": tr.get("sure_best"),
                                 "best_epoch": tr.get("best_epoch")}
                print(f"  fine-tuned {tr.get('iterations')} iterations in {C.human_seconds(t_fit)}; SURE "
                      f"{tr.get('sure_start'):.3g} -> {tr.get('sure_best'):.3g} (epoch {tr.get('best_epoch')} kept)",
                      flush=True)
            t0 = time.perf_counter()
            gb = [gaussian_best(n, c) for n, c in zip(noisy, clean)]
            results["gaussian_best"] = np.stack([g[0] for g in gb])
            sig = [g[1] for g in gb]
            seconds["gaussian_best"] = seconds.get("gaussian_best", 0) + time.perf_counter() - t0
            for m in ("nl_means", "tv"):
                t0 = time.perf_counter()
                results[m] = C.denoise_stack(noisy, m, batch_size=1, workers=args.threads)
                seconds[m] = seconds.get(m, 0) + time.perf_counter() - t0
            results["noisy"] = noisy
            floor = [noise_floor_psnr(n, c) for n, c in zip(noisy, clean)]
            for m, est in results.items():
                for i, (lab, y, c) in enumerate(zip(labels, est, clean)):
                    p, s = _metrics(y, c)
                    rows.append({"crop": lab, "dose": dose, "method": m, "psnr": p, "ssim": s,
                                 "sigma": sig[i] if m == "gaussian_best" else None, "noise_floor_psnr": floor[i]})
            for m in results:
                sel = [r for r in rows if r["dose"] == dose and r["method"] == m]
                print(f"  {m:>14}: PSNR {np.mean([r['psnr'] for r in sel]):6.2f} dB  SSIM "
                      f"{np.mean([r['ssim'] for r in sel]):.3f}", flush=True)
            if dose == min(args.doses):
                example = {"dose": dose, "crop": labels[0], "panels": [("noisy", noisy[0])]
                           + [(m, results[m][0]) for m in ("network", "finetuned", "gaussian_best", "nl_means", "tv")
                              if m in results] + [("clean", clean[0])],
                           "psnr": {m: _metrics(results[m][0], clean[0])[0] for m in results}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    C.banner(f"network time per {args.size}² frame ({args.threads} CPU threads)")
    t_net = network_seconds(model_ref, clean[0], args.timing_repeats)
    print(f"  {C.human_seconds(t_net)}")
    t_gpu = network_seconds(model_ref, clean[0], args.timing_repeats, "cuda") if torch.cuda.is_available() else None
    total = time.perf_counter() - t_start

    # ---------------------------------------------------------------- summary
    methods = [m for m in ("noisy", "network", "finetuned") + CLASSICAL if any(r["method"] == m for r in rows)]
    summary, bars = [], []
    for dose in args.doses:
        s = {"dose": dose}
        for m in methods:
            sel = [r for r in rows if r["dose"] == dose and r["method"] == m]
            s[f"{m}_psnr"] = float(np.mean([r["psnr"] for r in sel]))
            s[f"{m}_ssim"] = float(np.mean([r["ssim"] for r in sel]))
        best = max(CLASSICAL, key=lambda m: s[f"{m}_psnr"])
        s["best_classical"] = best
        s["margin_db"] = s["network_psnr"] - s[f"{best}_psnr"]
        # the reference's own noise: what any method could reach, and how much room is left above the best filter
        per_crop = {r["crop"]: r for r in rows if r["dose"] == dose and r["method"] == best}
        floors = np.array([r["noise_floor_psnr"] for r in per_crop.values()])
        s["floor_mean_psnr"] = float(floors.mean())
        s["headroom_db"] = s["floor_mean_psnr"] - s[f"{best}_psnr"]
        s["crops_without_2db_room_pct"] = 100 * float(np.mean(
            [r["noise_floor_psnr"] - r["psnr"] < MARGIN_DB for r in per_crop.values()]))
        s["crops_above_floor"] = int(sum(r["psnr"] > r["noise_floor_psnr"] for r in rows
                                         if r["dose"] == dose and r["method"] != "noisy"))
        bars.append({"bar": f"network >= {MARGIN_DB:g} dB above the best classical filter at dose {dose:g}",
                     "value": f"{s['margin_db']:+.2f} dB (vs {best})", "pass": s["margin_db"] >= MARGIN_DB})
        if "finetuned" in methods:
            s["finetune_delta_db"] = s["finetuned_psnr"] - s["network_psnr"]
            s["finetune_delta_ssim"] = s["finetuned_ssim"] - s["network_ssim"]
            s["finetuned_margin_db"] = s["finetuned_psnr"] - s[f"{best}_psnr"]
        summary.append(s)
    if "finetuned" in methods:
        mean_delta = float(np.mean([s["finetune_delta_db"] for s in summary]))
        bars.append({"bar": "fine-tuning does not make it worse on average (PSNR over doses)",
                     "value": f"{mean_delta:+.2f} dB", "pass": mean_delta >= 0})
    bars.append({"bar": f"network <= {MAX_SECONDS_PER_FRAME:g} s per {args.size}² frame on {args.threads} CPU threads",
                 "value": f"{t_net:.3f} s", "pass": t_net <= MAX_SECONDS_PER_FRAME})
    all_pass = all(b["pass"] for b in bars)

    out = args.out
    C.write_csv(rows, out / "eval_denoising_crops.csv")
    C.write_csv(summary, out / "eval_denoising_summary.csv")
    shown = [dict(s, dose=f"{s['dose']:g}") for s in summary]
    t_psnr = C.markdown_table(shown, ["dose"] + [f"{m}_psnr" for m in methods] + ["best_classical", "margin_db"],
                              headers=["dose (e-/px)"] + methods + ["best classical", "network margin (dB)"],
                              floatfmt=".2f")
    t_ssim = C.markdown_table(shown, ["dose"] + [f"{m}_ssim" for m in methods], floatfmt=".3f",
                              headers=["dose (e-/px)"] + methods)
    t_ft = ""
    if ft_info:
        t_ft = C.markdown_table([dict(dose=f"{d:g}", **v, delta_db=next(s["finetune_delta_db"] for s in summary
                                                                   if s["dose"] == d)) for d, v in ft_info.items()],
                                ["dose", "iterations", "fit_seconds", "first_loss", "final_running_loss", "sure_start",
                                 "sure_best", "best_epoch", "delta_db"],
                                headers=["dose", "iterations", "fit time (s)", "first loss", "final loss",
                                         "SURE before", "SURE kept", "epoch kept", "PSNR change (dB)"])
    t_floor = C.markdown_table(
        shown, ["dose", "network_psnr", "floor_mean_psnr", "headroom_db", "crops_without_2db_room_pct",
                "crops_above_floor"],
        headers=["dose (e-/px)", "network (dB)", "noise floor of the references (dB, mean over crops)",
                 "room above the best classical filter (dB)", "crops with < 2 dB room (%)",
                 "results above their floor (check, should be 0)"], floatfmt=".2f")
    floor_text = (t_floor + "\nThe references are experimental images with their own noise. A denoiser cannot tell "
                  "that noise from the added shot noise where both are white, so no method can exceed, on a crop, "
                  "the Wiener bound -10 log10(σr² σa² / (σr² + σa²)) (σr: the reference's noise, estimated blindly; "
                  "σa²: the added noise's variance); structure is assumed perfectly recovered. Where the best "
                  "classical filter is already within 2 dB of that bound, the +2 dB bar cannot be met on that crop "
                  "by any method. An estimate: σr is estimated, and JPEG-exported references do not carry white "
                  "noise.")
    t_bars = C.markdown_table(bars, ["bar", "value", "pass"])
    n_frames = len(crops) * len(args.doses)
    t_time = C.markdown_table([{"method": m, "s_per_frame": v / n_frames} for m, v in seconds.items()],
                              headers=["method", "s per frame (this run, batched)"])
    time_line = (f"Network, one {args.size}² frame, {args.threads} CPU threads: **{t_net:.3f} s** (median of "
                 f"{args.timing_repeats})" + (f"; CUDA ({torch.cuda.get_device_name(0)}): {t_gpu:.4f} s" if t_gpu
                                              else "; no CUDA device") + f". Total run {C.human_seconds(total)}.")
    if example:
        panels = [(f"{name}\n{example['psnr'][name]:.2f} dB" if name in example["psnr"] else name, img)
                  for name, img in example["panels"]]
        plot_example(panels, out / "eval_denoising_example.png",
                     f"dose {example['dose']:g} e-/px at full scale, {example['crop']} (top-left 256² of the 512² "
                     "crop; PSNR against the clean crop)")
    notes = [f"{len(crops)} crops ({args.per_image} per image max) of {args.size}², seed {args.seed}; "
             f"denoiser `{info['name']}` (sha256 {info['sha256']}…, {info['iterations']} iterations); noise level "
             f"input: {args.noise_level}; fine-tuning: "
             + (f"{args.finetune_epochs} epochs `{args.finetune_method}` per dose, the epoch with the lowest "
                "SURE estimate kept (the start included)" if args.finetune_epochs > 0 else "skipped")
             + f"; Gaussian sigma grid {SIGMAS[0]}–{SIGMAS[-1]} px ({len(SIGMAS)} values)."]
    if skipped:
        notes.append("Skipped (smaller than the crop): "
                     + ", ".join(f"`{lab}` {shape}" for lab, shape in skipped) + ".")
    if model.config.get("interim") or model.config.get("random_init"):
        notes.append(f"**The denoiser is an interim/random model ({info['name']}): not the shipped figures.**")
    sections = [("Setup", " ".join(notes)), ("Mean PSNR (dB)", t_psnr), ("Mean SSIM", t_ssim)]
    if t_ft:
        sections.append(("Self-supervised fine-tuning", t_ft))
    sections.append(("Noise floor of the references", floor_text))
    sections += [("Bars", t_bars + f"\nAll bars met: **{'yes' if all_pass else 'no'}**"),
                 ("Time", t_time + "\n" + time_line)]
    if example:
        sections.append(("Example", "![example](eval_denoising_example.png)"))
    env = C.environment(args)
    env["model"] = info
    C.write_report(out / "eval_denoising.md", "Denoising quality on the validation split", sections, env)

    C.banner("mean PSNR (dB)")
    print(t_psnr)
    C.banner("mean SSIM")
    print(t_ssim)
    if t_ft:
        C.banner("fine-tuning")
        print(t_ft)
    C.banner("noise floor of the references")
    print(t_floor)
    C.banner("bars")
    print(t_bars)
    print(f"all bars met: {'yes' if all_pass else 'no'}")
    print(time_line)
    written = ["eval_denoising.md", "eval_denoising_summary.csv", "eval_denoising_crops.csv"]
    written += ["eval_denoising_example.png"] if example else []
    print("written: " + ", ".join(str(out / w) for w in written))
    return summary, bars


if __name__ == "__main__":
    main()
