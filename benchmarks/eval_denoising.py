"""Evaluation: denoising quality on the validation split (the protocols of issues 4 and 14).

Protocol
--------
* Data: the ``val`` split; up to ``--per-image`` (2) crops of ``--size``
  (512) per image (seeded crops, as ``eval_completion.py``), min/max
  normalised to [0, 1]. With ``--bin 2`` the crops are 2x2-binned references:
  crops of twice the side averaged over 2x2 pixel blocks (halving the
  reference's own white noise) and then normalised; images smaller than
  ``bin * size`` are skipped. ``--split synthetic`` evaluates instead on
  references without noise of their own: the package's atomic lattices
  (:data:`SYNTHETIC_SPACINGS`) and nanoparticle fields.
* Noise: Poisson shot noise, ``degrade(crop, FrameNoise(dose=d))`` with d = 10,
  50 and 200 electrons per pixel at full scale (a seeded draw per crop and
  dose), on the (binned) reference.
* Methods, scored by PSNR and SSIM (``data_range=1``) against the clean crop
  (``--methods`` selects; default all):
  - ``network_known`` / ``network_blind``: the shipped denoiser,
    ``denoise(..., "generator")``, given the Poisson variance model
    (variance = signal / dose) in the metadata, or the noise model estimated
    blindly from each frame (``--noise-level both``, the default, runs both);
  - ``finetuned``: that network fine-tuned self-supervised
    (``fit_denoiser(..., method=--finetune-method, epochs=--finetune-epochs)``,
    SURE by default, keeping the epoch with the lowest risk estimate, PURE
    for ``pure`` and SURE otherwise; the dose
    known when ``network_known`` runs) on the noisy val crops of that dose
    only, then applied to them (``--finetune-epochs 0`` skips it), or with
    ``--finetune-per-crop`` on each crop alone, then applied to it;
  - ``bm3d_vst``: BM3D (the ``bm3d`` package from PyPI, if importable; skipped
    with a message otherwise; its licence allows non-commercial use only) with
    a variance-stabilising transform: the crop times the dose gives the
    counts, the generalised Anscombe transform (here without Gaussian noise:
    Anscombe's) makes their noise of unit variance, BM3D denoises with
    sigma = 1, and the closed-form approximation of the exact unbiased
    inverse (Makitalo & Foi 2011) maps back, divided by the dose;
  - ``gaussian_best``: Gaussian filter with the sigma chosen *with hindsight*
    per crop (grid search against the clean crop: an upper bound for it);
  - ``nl_means`` and ``tv``: scikit-image filters with parameters estimated
    from the noisy frame (the package's defaults);
  - ``wiener``: the package's sliding-window empirical Wiener filter with the
    blind Poisson-Gaussian noise estimate (``denoise(..., "wiener")``).
* Reported: mean PSNR/SSIM and seconds per frame of every method and dose, the
  references' noise floor (the Wiener bound set by their own noise) and the
  bars below, met or not.
* Bars (issue 14; dose known, ``--bin 2``): the network is >= 0.5 dB above
  BM3D-VST on the mean at every dose and above it on >= 70 % of the crops at
  every dose; its mean SSIM is not below BM3D-VST's at any dose; it takes
  <= 0.5 s per 512x512 frame on 2 CPU threads. Blind noise level: within
  0.3 dB of the dose-known PSNR on the mean at every dose, and no crop more
  than 1.0 dB below its dose-known result. Fine-tuning (when run) does not
  make the network worse on average, lowers no crop's PSNR by more than
  0.1 dB at any dose, and gains >= 0.3 dB on the mean at dose 10.

    python benchmarks/eval_denoising.py --bin 2 --finetune-epochs 0         # the issue-14 protocol
    # a new model, the classical methods of an earlier full run reused (minutes instead of ~15; BM3D is slow):
    python benchmarks/eval_denoising.py --bin 2 --finetune-epochs 0 --model PATH \
        --reuse-classical benchmarks/results/denoising_v2/eval_denoising_crops.csv
    python benchmarks/eval_denoising.py --max-images 2 --doses 10 --finetune-epochs 1 --threads 1   # smoke test
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

NETWORKS = ("network_known", "network_blind")
CLASSICAL = ("bm3d_vst", "gaussian_best", "nl_means", "tv", "wiener")
METHODS = NETWORKS + ("finetuned",) + CLASSICAL
PEER = "bm3d_vst"
PEER_MARGIN_DB = 0.5
PEER_WIN_FRACTION = 0.7
BLIND_MEAN_DB = 0.3
BLIND_CROP_DB = 1.0
MAX_SECONDS_PER_FRAME = 0.5
FINETUNE_CROP_DB = 0.1
FINETUNE_GAIN_DB = 0.3
FINETUNE_GAIN_DOSE = 10
SIGMAS = tuple(np.round(np.geomspace(0.3, 8.0, 30), 4))


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0], model_task="denoising", threads=2)
    p.add_argument("--max-images", type=int, default=None, help="use at most this many val images")
    p.add_argument("--split", choices=["val", "train", "synthetic"], default="val",
                   help="images to evaluate on (train: for choosing settings without looking at val; synthetic: "
                        "the package's lattices and particle fields, references without noise of their own)")
    p.add_argument("--per-image", type=int, default=2, help="crops per image")
    p.add_argument("--size", type=int, default=512, help="crop side (after binning)")
    p.add_argument("--bin", type=int, choices=[1, 2], default=1,
                   help="average the references over bin x bin pixel blocks before normalising (2: their own "
                        "noise halved)")
    p.add_argument("--doses", type=float, nargs="+", default=[10, 50, 200],
                   help="electrons per pixel at full scale")
    p.add_argument("--methods", nargs="+", choices=[m for m in METHODS if m not in NETWORKS], default=None,
                   help="methods besides the network (default: all; finetuned also needs --finetune-epochs > 0)")
    p.add_argument("--finetune-epochs", type=int, default=10,
                   help="epochs of self-supervised fine-tuning per dose (0: skip fine-tuning)")
    p.add_argument("--finetune-method", choices=["sure", "pure", "blind_spot"], default="sure",
                   help="self-supervised fine-tuning objective (fit_denoiser's method)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="fine-tuning learning rate (default: fit_denoiser's, as users get it)")
    p.add_argument("--finetune-per-crop", action="store_true",
                   help="fit one model per crop (a user fitting to their own image) instead of one per dose")
    p.add_argument("--noise-level", choices=["blind", "known", "both"], default="both",
                   help="network noise-level input: blind estimate, the known Poisson variance model "
                        "(variance = signal / dose) in the metadata, or both")
    p.add_argument("--timing-repeats", type=int, default=5, help="timed single-frame network calls (median)")
    p.add_argument("--batch-size", type=int, default=None, help="network frames per batch (default: package)")
    p.add_argument("--reuse-classical", type=Path, default=None, metavar="CSV",
                   help="eval_denoising_crops.csv of an earlier run with the same --seed, --bin, --size and --split: "
                        "its classical methods' rows (and seconds per frame, from the methods CSV beside it) are "
                        "reused instead of recomputed; every crop's noisy PSNR must match, else the run stops")
    return p.parse_args(argv)


def load_reused(path, methods):
    """{(crop, dose, method): row} of the classical ``methods`` in an earlier crops CSV, and {method: s per frame}."""
    import csv

    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["method"] in set(methods) | {"noisy"}:
                rows[r["crop"], float(r["dose"]), r["method"]] = {
                    "crop": r["crop"], "dose": float(r["dose"]), "method": r["method"], "psnr": float(r["psnr"]),
                    "ssim": float(r["ssim"]), "sigma": float(r["sigma"]) if r.get("sigma") else None,
                    "noise_floor_psnr": float(r["noise_floor_psnr"])}
    seconds, table = {}, path.with_name("eval_denoising_methods.csv")
    if table.exists():
        with open(table, newline="") as f:
            seconds = {r["method"]: float(r["s_per_frame"]) for r in csv.DictReader(f) if r.get("s_per_frame")}
    return rows, seconds


def reusable(reused, labels, dose, noisy_psnr, methods):
    """The classical ``methods`` with a reused row for every crop of this dose, after checking the noise is the same."""
    if not reused:
        return []
    for lab, p in zip(labels, noisy_psnr):
        old = reused.get((lab, float(dose), "noisy"))
        if old is None or abs(old["psnr"] - p) > 1e-4:
            raise SystemExit(f"--reuse-classical: crop {lab} at dose {dose:g} is not the earlier run's "
                             f"(noisy PSNR {p:.4f} vs {old['psnr'] if old else 'missing'}): same --seed, --bin, "
                             f"--size and --split needed")
    return [m for m in methods if m in CLASSICAL and all((lab, float(dose), m) in reused for lab in labels)]


def binned(x, b):
    """``x`` averaged over ``b`` x ``b`` pixel blocks (trailing rows/columns dropped), min/max normalised to [0, 1]."""
    from hyperspy_partialscan.blocks import block_mean

    y = block_mean(x, b)  # every pixel is measured: the plain block mean
    lo, hi = float(y.min()), float(y.max())
    return ((y - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


#: how the report names each ``--split``: in its title, and as the source of its data
SPLIT_TITLES = {"val": "the validation split", "train": "the train split", "synthetic": "synthetic references"}
SPLIT_SOURCES = {"val": "the `val` split", "train": "the `train` split", "synthetic": "synthetic references (the "
                 "package's lattices and particle fields, no noise of their own)"}

#: lattice constants (px) of the synthetic references (``--split synthetic``), one lattice and one particle field each
SYNTHETIC_SPACINGS = (6.0, 9.0, 12.0, 18.0, 24.0, 32.0)


def synthetic_crops(args):
    """Noise-free references: the package's atomic lattices and nanoparticle fields (seeds apart from training's)."""
    shape, out = (args.size * args.bin,) * 2, []
    for k, spacing in enumerate(SYNTHETIC_SPACINGS[:args.max_images]):
        seed = 10_000 + 100 * args.seed + k
        out += [(f"lattice_{spacing:g}px#{seed}", C.specimen("lattice", seed, shape, spacing=spacing)),
                (f"particles#{seed}", C.specimen("particles", seed, shape))]
    return out, []


def reference_crops(args):
    """The (binned) crops of ``--size`` of the ``--split`` images, and the images skipped."""
    if args.split == "synthetic":
        crops, skipped = synthetic_crops(args)
    else:
        crops, skipped = C.val_crops(max_images=args.max_images, per_image=args.per_image, size=args.size * args.bin,
                                     seed=args.seed, split=args.split)
    if args.bin > 1:
        crops = [(lab, binned(x, args.bin)) for lab, x in crops]
    return crops, skipped


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


def anscombe(z, gain, sigma=0.0):
    """Generalised Anscombe transform of Poisson-Gaussian data z = gain * Poisson + N(0, sigma^2): unit variance."""
    return 2.0 / gain * np.sqrt(np.clip(gain * z + 0.375 * gain**2 + sigma**2, 0, None))


def inverse_anscombe(d, gain):
    """Closed-form approximation of the exact unbiased inverse of Anscombe's transform (Makitalo & Foi 2011).

    Returns counts times ``gain`` (the data's units).

    Pure Poisson data (no Gaussian term); values of ``d`` below 2 sqrt(3/8),
    where the inverse reaches 0, map to 0.
    """
    d = np.maximum(np.asarray(d, np.float64), 2 * np.sqrt(0.375))
    r = np.sqrt(1.5)
    return gain * (0.25 * d**2 + 0.25 * r / d - 11 / 8 / d**2 + 5 / 8 * r / d**3 - 0.125)


def bm3d_vst(noisy, dose):
    """BM3D at sigma 1 between the Anscombe transform and its exact unbiased inverse.

    The crop in [0, 1] times the dose is counts; the transform at ``gain`` =
    1 / dose is Anscombe's on the counts (unit noise variance).
    """
    import bm3d

    gain = 1.0 / dose  # variance = signal / dose on the crop's [0, 1] scale
    d = bm3d.bm3d(anscombe(np.asarray(noisy, np.float64), gain), sigma_psd=1.0)
    return inverse_anscombe(d, gain).astype(np.float32)


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


def _known_metadata(dose):
    """The Poisson variance model (variance = signal / dose on the crops' [0, 1] scale) as signal metadata."""
    return {"Signal.Noise_properties.Variance_linear_model": {"gain_factor": 1.0 / dose, "gain_offset": 0.0}}


def _finetune(args, model_ref, noisy, dose, meta, tmp):
    """Fine-tune the network on the noisy crops of one dose; (model path, record)."""
    from hyperspy_partialscan.denoising import fit_denoiser

    t0 = time.perf_counter()
    init = "default" if args.model is None else model_ref
    lr = {} if args.finetune_lr is None else {"lr": args.finetune_lr}
    ft = fit_denoiser(C.stack_signal(noisy, metadata=meta), init=init, method=args.finetune_method,
                      epochs=args.finetune_epochs, output=tmp / f"finetuned_dose{dose:g}", seed=args.seed,
                      show_progressbar=False, **lr)
    t_fit = time.perf_counter() - t0
    tr = ft.config.get("training", {})
    risk = "pure" if "pure_best" in tr else "sure"  # the estimate keep_best selected by
    print(f"  fine-tuned {tr.get('iterations')} iterations in {C.human_seconds(t_fit)}; {risk.upper()} "
          f"{tr.get(f'{risk}_start'):.3g} -> {tr.get(f'{risk}_best'):.3g} (epoch {tr.get('best_epoch')} kept)",
          flush=True)
    return str(ft.path), {"fit_seconds": t_fit, "iterations": tr.get("iterations"), "first_loss": tr.get("first_loss"),
                          "final_running_loss": tr.get("final_running_loss"), "risk": risk,
                          "risk_start": tr.get(f"{risk}_start"), "risk_best": tr.get(f"{risk}_best"),
                          "best_epoch": tr.get("best_epoch")}


def run_dose(args, methods, dose, noisy, clean, model_ref, tmp, seconds):
    """Every method on the noisy crops of one dose: {method: (n, H, W) estimates}, extras (sigmas, fine-tuning)."""
    levels = ["known", "blind"] if args.noise_level == "both" else [args.noise_level]
    results, extras = {}, {}

    def timed(name, func):
        t0 = time.perf_counter()
        results[name] = func()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

    for level in levels:
        meta = _known_metadata(dose) if level == "known" else None
        timed(f"network_{level}", lambda meta=meta: C.denoise_stack(noisy, "generator", model=model_ref,
                                                                    batch_size=args.batch_size, workers=1,
                                                                    metadata=meta))
    if "finetuned" in methods and args.finetune_epochs > 0:
        meta = _known_metadata(dose) if "known" in levels else None
        groups = [slice(i, i + 1) for i in range(len(noisy))] if args.finetune_per_crop else [slice(None)]
        paths, fits = [], []
        for k, g in enumerate(groups):
            (tmp / f"group{k}").mkdir(exist_ok=True)
            path, record = _finetune(args, model_ref, noisy[g], dose, meta, tmp / f"group{k}")
            paths.append(path)
            fits.append(record)
        # timed as every method: applying the fitted model(s), not fitting them (fit_seconds, below)
        timed("finetuned", lambda: np.concatenate([
            C.denoise_stack(noisy[g], "generator", model=path, batch_size=args.batch_size, workers=1, metadata=meta)
            for g, path in zip(groups, paths)]))
        extras["finetune"] = {key: (float(np.mean([f[key] for f in fits])) if key != "risk" else fits[0][key])
                              for key in fits[0]} if len(fits) > 1 else fits[0]
    if "bm3d_vst" in methods:
        timed("bm3d_vst", lambda: np.stack([bm3d_vst(n, dose) for n in noisy]))
    if "gaussian_best" in methods:
        def hindsight():
            gb = [gaussian_best(n, c) for n, c in zip(noisy, clean)]
            extras["sigma"] = [g[1] for g in gb]
            return np.stack([g[0] for g in gb])

        timed("gaussian_best", hindsight)
    for m in ("nl_means", "tv", "wiener"):
        if m in methods:
            timed(m, lambda m=m: C.denoise_stack(noisy, m, batch_size=1, workers=args.threads))
    results["noisy"] = noisy
    return results, extras


def summarise(rows, doses, seconds, n_frames, t_net):
    """Per-dose means, the per-method table and the bars."""
    methods = [m for m in ("noisy",) + METHODS if any(r["method"] == m for r in rows)]
    per = {(r["dose"], r["method"], r["crop"]): r for r in rows}
    crops = sorted({r["crop"] for r in rows})
    summary, bars = [], []
    net = "network_known" if "network_known" in methods else "network_blind"
    for dose in doses:
        s = {"dose": dose}
        for m in methods:
            sel = [per[dose, m, c] for c in crops]
            s[f"{m}_psnr"] = float(np.mean([r["psnr"] for r in sel]))
            s[f"{m}_ssim"] = float(np.mean([r["ssim"] for r in sel]))
        floors = np.array([per[dose, "noisy", c]["noise_floor_psnr"] for c in crops])
        s["floor_mean_psnr"] = float(floors.mean())
        s["crops_above_floor"] = int(sum(r["psnr"] > r["noise_floor_psnr"] for r in rows
                                         if r["dose"] == dose and r["method"] != "noisy"))
        if PEER in methods:
            diffs = np.array([per[dose, net, c]["psnr"] - per[dose, PEER, c]["psnr"] for c in crops])
            s["margin_over_bm3d_db"] = float(diffs.mean())
            s["crops_above_bm3d_pct"] = 100 * float(np.mean(diffs > 0))
            bars.append({"bar": f"{net} >= {PEER_MARGIN_DB:g} dB above BM3D-VST (mean) at dose {dose:g}",
                         "value": f"{diffs.mean():+.2f} dB", "pass": bool(diffs.mean() >= PEER_MARGIN_DB)})
            bars.append({"bar": f"{net} above BM3D-VST on >= {100 * PEER_WIN_FRACTION:.0f} % of crops at dose {dose:g}",
                         "value": f"{s['crops_above_bm3d_pct']:.0f} %",
                         "pass": bool(s["crops_above_bm3d_pct"] >= 100 * PEER_WIN_FRACTION)})
            bars.append({"bar": f"{net} mean SSIM not below BM3D-VST's at dose {dose:g}",
                         "value": f"{s[f'{net}_ssim'] - s[f'{PEER}_ssim']:+.3f}",
                         "pass": bool(s[f"{net}_ssim"] >= s[f"{PEER}_ssim"])})
        if {"network_known", "network_blind"} <= set(methods):
            gap = np.array([per[dose, "network_blind", c]["psnr"] - per[dose, "network_known", c]["psnr"]
                            for c in crops])
            s["blind_minus_known_db"], s["blind_worst_crop_db"] = float(gap.mean()), float(gap.min())
            s["blind_worst_crop"] = crops[int(gap.argmin())]
            bars.append({"bar": f"blind within {BLIND_MEAN_DB:g} dB of dose known (mean) at dose {dose:g}",
                         "value": f"{gap.mean():+.2f} dB", "pass": bool(gap.mean() >= -BLIND_MEAN_DB)})
            bars.append({"bar": f"no crop blind more than {BLIND_CROP_DB:g} dB below dose known at dose {dose:g}",
                         "value": f"worst {gap.min():+.2f} dB ({s['blind_worst_crop']})",
                         "pass": bool(gap.min() >= -BLIND_CROP_DB)})
        if "finetuned" in methods:
            delta = np.array([per[dose, "finetuned", c]["psnr"] - per[dose, net, c]["psnr"] for c in crops])
            s["finetune_delta_db"], s["finetune_worst_crop_db"] = float(delta.mean()), float(delta.min())
            s["finetune_worst_crop"] = crops[int(delta.argmin())]
            bars.append({"bar": f"fine-tuning lowers no crop by more than {FINETUNE_CROP_DB:g} dB at dose {dose:g}",
                         "value": f"worst {delta.min():+.2f} dB ({s['finetune_worst_crop']})",
                         "pass": bool(delta.min() >= -FINETUNE_CROP_DB)})
            if dose == FINETUNE_GAIN_DOSE:
                bars.append({"bar": f"fine-tuning gains >= {FINETUNE_GAIN_DB:g} dB (mean) at dose {dose:g}",
                             "value": f"{delta.mean():+.2f} dB", "pass": bool(delta.mean() >= FINETUNE_GAIN_DB)})
        summary.append(s)
    if "finetuned" in methods:
        mean_delta = float(np.mean([s["finetune_delta_db"] for s in summary]))
        bars.append({"bar": "fine-tuning does not make it worse on average (PSNR over doses)",
                     "value": f"{mean_delta:+.2f} dB", "pass": bool(mean_delta >= 0)})
    bars.append({"bar": f"network <= {MAX_SECONDS_PER_FRAME:g} s per 512² frame on 2 CPU threads",
                 "value": f"{t_net:.3f} s", "pass": bool(t_net <= MAX_SECONDS_PER_FRAME)})
    table = [dict({"method": m}, **{f"{k}_{d:g}": s[f"{m}_{k}"] for s, d in zip(summary, doses)
                                    for k in ("psnr", "ssim")},
                  s_per_frame=seconds.get(m, 0.0) / n_frames if m in seconds else None) for m in methods]
    return methods, summary, bars, table


def main(argv=None):
    args = C.setup(parse_args(argv))
    import torch

    from hyperspy_partialscan.metrics import psnr
    from hyperspy_partialscan.noise import FrameNoise, degrade

    t_start = time.perf_counter()
    args.methods = list(args.methods or [m for m in METHODS if m not in NETWORKS])
    if "bm3d_vst" in args.methods:
        try:
            import bm3d  # noqa: F401
        except ImportError:
            print("bm3d_vst skipped: the `bm3d` package is not importable (pip install bm3d; benchmark only, "
                  "non-commercial licence)", flush=True)
            args.methods.remove("bm3d_vst")
    model = C.resolve_model(args.model, "denoising")
    info = C.model_info(model)
    model_ref = str(model.path)
    crops, skipped = reference_crops(args)
    labels = [lab for lab, _ in crops]
    clean = np.stack([x for _, x in crops])
    print(f"{len(crops)} crops of {args.size}² (bin {args.bin}) from {len({lab.split('#')[0] for lab in labels})} "
          f"{args.split} images; skipped: {', '.join(f'{lab} {shape}' for lab, shape in skipped) or 'none'}",
          flush=True)
    print(f"denoiser: {info['name']} (sha256 {info['sha256']}…, iterations {info['iterations']})", flush=True)

    rows, example, seconds, ft_info = [], {}, {}, {}
    reused, reused_seconds = load_reused(args.reuse_classical, args.methods) if args.reuse_classical else ({}, {})
    reused_methods = set()
    tmp = Path(tempfile.mkdtemp(prefix="partialscan_evaldenoise_"))
    try:
        for dose in args.doses:
            C.banner(f"dose {dose:g} e-/px")
            noisy = np.stack([degrade(x, FrameNoise(dose=dose), np.random.default_rng([args.seed, C.frame_key(lab),
                                                                                     int(dose * 1000)]))
                              for lab, x in crops])
            reuse = reusable(reused, labels, dose, [psnr(n, c) for n, c in zip(noisy, clean)], args.methods)
            results, extras = run_dose(args, [m for m in args.methods if m not in reuse], dose, noisy, clean,
                                       model_ref, tmp, seconds)
            for m in reuse:
                # the dose as this run writes it (the earlier CSV's may read "10.0" where this run writes "10")
                rows += [dict(reused[lab, float(dose), m], dose=dose) for lab in labels]
                # the earlier run's seconds per frame were over all its doses (the same doses)
                seconds[m] = seconds.get(m, 0.0) + reused_seconds.get(m, 0.0) * len(labels) / len(args.doses)
                reused_methods.add(m)
            if "finetune" in extras:
                ft_info[dose] = extras["finetune"]
            floor = [noise_floor_psnr(n, c) for n, c in zip(noisy, clean)]
            for m, est in results.items():
                for i, (lab, y, c) in enumerate(zip(labels, est, clean)):
                    p, s = _metrics(y, c)
                    rows.append({"crop": lab, "dose": dose, "method": m, "psnr": p, "ssim": s,
                                 "sigma": extras["sigma"][i] if m == "gaussian_best" else None,
                                 "noise_floor_psnr": floor[i]})
            for m in [*results, *reuse]:
                sel = [r for r in rows if r["dose"] == dose and r["method"] == m]
                print(f"  {m:>14}: PSNR {np.mean([r['psnr'] for r in sel]):6.2f} dB  SSIM "
                      f"{np.mean([r['ssim'] for r in sel]):.3f}", flush=True)
            if dose == min(args.doses):
                example = {"dose": dose, "crop": labels[0], "panels": [("noisy", noisy[0])]
                           + [(m, results[m][0]) for m in METHODS if m in results] + [("clean", clean[0])],
                           "psnr": {m: _metrics(results[m][0], clean[0])[0] for m in results}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    C.banner(f"network time per {args.size}² frame ({args.threads} CPU threads)")
    t_net = network_seconds(model_ref, clean[0], args.timing_repeats)
    print(f"  {C.human_seconds(t_net)}")
    t_gpu = network_seconds(model_ref, clean[0], args.timing_repeats, "cuda") if torch.cuda.is_available() else None
    total = time.perf_counter() - t_start
    methods, summary, bars, table = summarise(rows, args.doses, seconds, len(crops), t_net)
    write_outputs(args, rows, summary, bars, table, methods, ft_info, example, skipped, len(crops), info, model,
                  (t_net, t_gpu, total), sorted(reused_methods))
    return summary, bars


FLOOR_TEXT = ("The references are experimental images with their own noise. A denoiser cannot tell that noise from "
              "the added shot noise where both are white, so no method can exceed, on a crop, the Wiener bound "
              "-10 log10(σr² σa² / (σr² + σa²)) (σr: the reference's noise, estimated blindly; σa²: the added "
              "noise's variance); structure is assumed perfectly recovered. An estimate: σr is estimated, and "
              "JPEG-exported references do not carry white noise. A blind noise estimate measures both noises "
              "(σr² + σa²), the dose-known model only σa²: where σr² is not small against σa², a network given the "
              "blind estimate also removes the reference's noise, which this benchmark scores as an error.")


def methods_markdown(table, doses, size):
    """The methods table: PSNR (dB, 2 decimals) and SSIM (3 decimals) per dose, seconds per frame."""
    doses = [f"{float(d):g}" for d in doses]
    fmt = {"psnr": "{:.2f}", "ssim": "{:.3f}", "s_per_frame": "{:.3g}"}
    shown = [{k: (fmt[k.rsplit("_", 1)[0] if k.startswith(("psnr", "ssim")) else k].format(float(v))
                  if k != "method" and v not in (None, "") else v) for k, v in row.items()} for row in table]
    return C.markdown_table(
        shown, ["method"] + [f"psnr_{d}" for d in doses] + [f"ssim_{d}" for d in doses] + ["s_per_frame"],
        headers=["method"] + [f"PSNR dose {d}" for d in doses] + [f"SSIM dose {d}" for d in doses]
        + [f"s per {size}² frame"])


def write_outputs(args, rows, summary, bars, table, methods, ft_info, example, skipped, n_crops, info, model, times,
                  reused=()):
    """CSV and markdown reports (and the example figure) in ``args.out``."""
    t_net, t_gpu, total = times
    all_pass = all(b["pass"] for b in bars)
    out = args.out
    C.write_csv(rows, out / "eval_denoising_crops.csv")
    C.write_csv(summary, out / "eval_denoising_summary.csv")
    C.write_csv(table, out / "eval_denoising_methods.csv")
    t_methods = methods_markdown(table, args.doses, args.size)
    shown = [dict(s, dose=f"{s['dose']:g}") for s in summary]
    cols = [c for c in ("margin_over_bm3d_db", "crops_above_bm3d_pct", "blind_minus_known_db", "blind_worst_crop_db",
                        "blind_worst_crop", "finetune_delta_db", "finetune_worst_crop_db", "floor_mean_psnr",
                        "crops_above_floor") if c in summary[0]]
    t_dose = C.markdown_table(shown, ["dose"] + cols, floatfmt=".2f")
    t_ft = ""
    if ft_info:
        t_ft = C.markdown_table([dict(dose=f"{d:g}", **v, delta_db=next(s["finetune_delta_db"] for s in summary
                                                                   if s["dose"] == d)) for d, v in ft_info.items()],
                                ["dose", "iterations", "fit_seconds", "first_loss", "final_running_loss", "risk",
                                 "risk_start", "risk_best", "best_epoch", "delta_db"])
    t_bars = C.markdown_table(bars, ["bar", "value", "pass"])
    time_line = (f"Network, one {args.size}² frame, {args.threads} CPU threads: **{t_net:.3f} s** (median of "
                 f"{args.timing_repeats})" + (f"; CUDA: {t_gpu:.4f} s" if t_gpu else "; no CUDA device")
                 + f". Total run {C.human_seconds(total)}. "
                 "Seconds per frame in the table: this run, batched, on the run's threads.")
    if example:
        panels = [(f"{name}\n{example['psnr'][name]:.2f} dB" if name in example["psnr"] else name, img)
                  for name, img in example["panels"]]
        plot_example(panels, out / "eval_denoising_example.png",
                     f"dose {example['dose']:g} e-/px at full scale, {example['crop']} (top-left 256² of the "
                     f"{args.size}² crop; PSNR against the clean crop)")
    source = SPLIT_SOURCES[args.split]
    notes = [f"Data: {source}. {n_crops} crops ({args.per_image} per image max) of {args.size}², references "
             f"binned {args.bin}x"
             f"{args.bin}, seed {args.seed}; denoiser `{info['name']}` (sha256 {info['sha256']}…, "
             f"{info['iterations']} iterations); noise level input: {args.noise_level}; fine-tuning: "
             + (f"{args.finetune_epochs} epochs `{args.finetune_method}` per "
                f"{'crop (table: means over crops)' if args.finetune_per_crop else 'dose'}" if ft_info else "skipped")
             + f"; Gaussian sigma grid {SIGMAS[0]}–{SIGMAS[-1]} px ({len(SIGMAS)} values)."]
    if skipped:
        notes.append("Skipped (smaller than the crop): "
                     + ", ".join(f"`{lab}` {shape}" for lab, shape in skipped) + ".")
    if reused:
        notes.append(f"Reused from `{args.reuse_classical}` (an earlier run on the same crops and noise, checked on "
                     f"every crop's noisy PSNR; its seconds per frame): {', '.join(reused)}.")
    if "bm3d_vst" not in methods:
        notes.append("BM3D-VST not run (`bm3d` not importable, or not selected).")
    if model.config.get("interim") or model.config.get("random_init"):
        notes.append(f"**The denoiser is an interim/random model ({info['name']}): not the shipped figures.**")
    sections = [("Setup", " ".join(notes)), ("Methods: mean PSNR (dB), mean SSIM, time", t_methods),
                ("Per dose", t_dose)]
    if t_ft:
        sections.append(("Self-supervised fine-tuning", t_ft))
    sections += [("Noise floor of the references", FLOOR_TEXT),
                 ("Bars", t_bars + f"\nAll bars met: **{'yes' if all_pass else 'no'}**"), ("Time", time_line)]
    if example:
        sections.append(("Example", "![example](eval_denoising_example.png)"))
    env = C.environment(args)
    env["model"] = info
    C.write_report(out / "eval_denoising.md", f"Denoising quality on {SPLIT_TITLES[args.split]}", sections, env)
    for title, text in (("methods", t_methods), ("per dose", t_dose), ("fine-tuning", t_ft), ("bars", t_bars)):
        if text:
            C.banner(title)
            print(text)
    print(f"all bars met: {'yes' if all_pass else 'no'}")
    print(time_line)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
