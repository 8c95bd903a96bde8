"""Shared helpers of the benchmark scripts (not part of the package).

Every benchmark is a plain script, ``python benchmarks/NAME.py [options]``; this
module holds what they share: thread limits, model resolution (and interim
models exported from training checkpoints), the validation crops, partial-scan
simulation, completion/denoising of stacks through the package's engine, timing
and the CSV / markdown / console output.

It is also a small command line for the interim models used while the shipped
models are being trained::

    python benchmarks/_common.py export runs/completion/checkpoint.pt /tmp/interim/completion_interim.safetensors
    python benchmarks/_common.py export runs/denoising/checkpoint.pt /tmp/interim/denoising_interim.safetensors
    python benchmarks/_common.py random /tmp/interim/completion_random.safetensors --task completion
"""

from __future__ import annotations

import os
import sys


def _early_thread_limit(argv):
    """Limit the BLAS/OpenMP pools to ``--threads N`` *before* numpy/torch load them.

    Environment variables already set (e.g. ``OMP_NUM_THREADS=1``) win.
    """
    n = None
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    if n is not None and n.isdigit() and int(n) > 0:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, n)


_early_thread_limit(sys.argv)

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results"

# the package is installed editable; make the scripts work from a plain checkout too
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from hyperspy_partialscan._atomic import atomic_path, write_text_atomic  # noqa: E402
from hyperspy_partialscan.metrics import rmse_percent  # noqa: E402,F401  (the benchmarks' RMSE, % of unit range)

# --------------------------------------------------------------------------- options and environment


def base_parser(description, *, model_task=None, threads=2):
    """ArgumentParser with the options every benchmark has (--out, --threads, --seed[, --model])."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the CSV/markdown/PNG outputs")
    p.add_argument("--threads", type=int, default=threads,
                   help="torch intra-op threads (and BLAS/OpenMP threads unless OMP_NUM_THREADS is set)")
    p.add_argument("--seed", type=int, default=0, help="seed of crops, paths and noise")
    if model_task is not None:
        p.add_argument("--model", default=None,
                       help=f"{model_task} model: shipped name or path to NAME.safetensors/.json "
                            "(default: the shipped default model)")
    return p


def setup(args):
    """Apply ``--threads`` to torch, quiet progress bars and warnings; create ``--out``."""
    import logging
    import warnings

    import torch

    torch.set_num_threads(max(1, int(args.threads)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (torch used before)
        pass
    from hyperspy.defaults_parser import preferences

    preferences.General.show_progressbar = False
    logging.getLogger("hyperspy").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*VisibleDeprecationWarning.*")
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def environment(args=None):
    """A dictionary describing the machine and software (recorded with every result)."""
    import dask
    import hyperspy
    import scipy
    import skimage
    import torch

    import hyperspy_partialscan

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {
            "hyperspy_partialscan": hyperspy_partialscan.__version__,
            "hyperspy": hyperspy.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
            "dask": dask.__version__,
            "torch": torch.__version__,
        },
    }
    try:
        import subprocess

        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001 - informative only
        info["git_commit"] = None
    if args is not None:
        info["command"] = " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    return info


# --------------------------------------------------------------------------- models


def resolve_model(ref, task):
    """Load a model (shipped name, path, or None for the shipped default) with a helpful error.

    Returns
    -------
    hyperspy_partialscan.models.Model
    """
    from hyperspy_partialscan.models import DEFAULT_MODELS, load_model

    try:
        return load_model(ref, task=task)
    except (ValueError, FileNotFoundError) as err:
        if ref is None:
            raise SystemExit(
                f"no shipped {task} model ({DEFAULT_MODELS[task]}) is installed yet: pass --model PATH, e.g. an "
                f"interim export of a training checkpoint:\n  python benchmarks/_common.py export "
                f"runs/{task}/checkpoint.pt /tmp/interim/{task}_interim.safetensors"
            ) from None
        raise SystemExit(f"cannot load {task} model {ref!r}: {err}") from None


def model_info(model):
    """Name, file, hash and training iterations of a model, for the reports."""
    training = model.config.get("training") or {}
    return {
        "name": model.name,
        "path": str(model.path),
        "sha256": model.sha256[:12],
        "architecture": model.config.get("architecture"),
        "iterations": model.training_iterations,  # in total, over any fine-tuning stages
        "iterations_last_stage": training.get("iterations"),
    }


def random_model(path, task, seed=0, **config):
    """A randomly initialised model (smoke tests only: the results mean nothing)."""
    import torch

    from hyperspy_partialscan.models import save_model
    from hyperspy_partialscan.models.networks import DenoisingUNet, PartialScanGenerator

    torch.manual_seed(seed)
    arch = {"completion": "PartialScanGenerator", "denoising": "DenoisingUNet"}[task]
    if task == "completion" and not config:  # the size the training command builds
        from hyperspy_partialscan.training import TrainConfig

        c = TrainConfig()
        config = {"width": c.width, "inner_blocks": c.inner_blocks, "outer_blocks": c.outer_blocks}
    net = (PartialScanGenerator if task == "completion" else DenoisingUNet)(**config)
    return save_model(net, path, task=task, architecture=arch, extra={"random_init": True, "training": None})


# --------------------------------------------------------------------------- data


def crop_rng(seed, label):
    """Generator for the crops of one image: fixed by (seed, image label), whatever else is read."""
    return np.random.default_rng([int(seed), zlib.crc32(label.encode())])


def val_crops(*, max_images=None, per_image=2, size=512, seed=0, data_dir=None, split="val"):
    """Crops of the validation images (or of another ``split``), each min/max normalised to [0, 1].

    Up to ``per_image`` ``size`` x ``size`` crops per val frame, at positions
    drawn from :func:`crop_rng` (so a crop does not depend on which other images
    are read); an image of exactly ``size`` gives one crop. Frames smaller than
    ``size`` are skipped and listed.

    Returns
    -------
    crops : list of (label, numpy.ndarray)
        ``label`` is ``FILE#k`` for the k-th crop of the frame ``FILE``.
    skipped : list of (label, shape)
    """
    from hyperspy_partialscan.io import default_data_dir, manifest_frames

    frames = manifest_frames(data_dir or default_data_dir(), split)
    crops, skipped, used = [], [], 0
    for label, f in frames:
        if min(f.shape) < size:
            skipped.append((label, tuple(f.shape)))
            continue
        if max_images is not None and used >= max_images:
            continue
        rng = crop_rng(seed, label)
        seen = set()
        for k in range(per_image):
            r = int(rng.integers(0, f.shape[0] - size + 1))
            q = int(rng.integers(0, f.shape[1] - size + 1))
            if (r, q) in seen:
                continue
            seen.add((r, q))
            x = f[r : r + size, q : q + size].astype(np.float64)
            lo, hi = float(x.min()), float(x.max())
            if hi - lo < 1e-6:
                continue
            crops.append((f"{Path(label.split(' + ')[0]).name}#{k}@{r},{q}", ((x - lo) / (hi - lo)).astype(np.float32)))
        used += 1
    return crops, skipped


def specimen(kind, seed, shape=(512, 512), **options):
    """A built-in synthetic specimen, min/max normalised to [0, 1] (``options``: the generator's, e.g. ``spacing``)."""
    from hyperspy_partialscan.specimens import atomic_lattice, nanoparticle_field

    f = (atomic_lattice if kind == "lattice" else nanoparticle_field)(shape, seed=seed, **options)
    lo, hi = float(f.min()), float(f.max())
    return ((f - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def truth_detail(target, unsampled):
    """The local RMS of the blurred truth's detail finer than the sampling gaps (a reference that knows the truth).

    ``target`` minus itself smoothed at the detail factor's outer scale (``uncertainty.DETAIL_BAND[1]`` times
    the mean distance from an unsampled pixel to its nearest sample), squared and averaged over 16 px.

    >>> import numpy as np
    >>> unsampled = np.ones((32, 32), bool); unsampled[::4, ::4] = False
    >>> float(truth_detail(np.zeros((32, 32)), unsampled).max()), bool(truth_detail(np.eye(32), unsampled).max() > 0)
    (0.0, True)
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    from hyperspy_partialscan.uncertainty import DETAIL_BAND

    gap = float(distance_transform_edt(unsampled)[unsampled].mean())
    return np.sqrt(gaussian_filter((target - gaussian_filter(target, DETAIL_BAND[1] * gap)) ** 2, 16.0))


def within_25pct(ratios):
    """Fraction of predicted / actual RMSE ratios within ±25 % (issue 12's per-crop bar).

    >>> within_25pct([0.75, 1.0, 1.25, 1.3])
    0.75
    """
    return float(np.mean(np.abs(np.asarray(ratios, float) - 1) <= 0.25))


def power_law_log_ratios(actual, predictor):
    """log(predicted / actual) when ``actual`` is predicted, with hindsight, by a power law of ``predictor``.

    The law (``log actual = a + b log predictor``) is fitted by least squares on the very values it
    predicts: a reference for what ``predictor`` could explain at best, not a rule.

    >>> import numpy as np
    >>> np.round(power_law_log_ratios([2.0, 2.0 * 4**0.5, 2.0 * 9**0.5], [1.0, 4.0, 9.0]), 6).tolist()
    [0.0, 0.0, 0.0]
    """
    y, x = np.log(np.asarray(actual, float)), np.log(np.asarray(predictor, float))
    return np.polyval(np.polyfit(x, y, 1), x) - y


def frame_key(*parts):
    """A stable integer from strings/numbers (to seed one crop's path whatever else is evaluated)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def simulate_partials(frames, path, coverage, seed=0, keys=None, **path_options):
    """Clean partial scans of ``frames`` along independently seeded paths.

    Frame ``i`` uses the path generator ``frame_rng(seed, keys[i])`` (default
    ``keys[i] = i``), so a fixed key gives the same path (for a given path
    name, shape and coverage) in every run.

    Returns
    -------
    partials : numpy.ndarray
        (n, H, W) float32, NaN where unsampled.
    coverages : list of float
        Measured coverage of each path.
    """
    from hyperspy_partialscan.paths import generate_path
    from hyperspy_partialscan.simulate import frame_rng, sample_frame

    out, cov = [], []
    keys = range(len(frames)) if keys is None else keys
    for x, key in zip(frames, keys):
        p = generate_path(path, x.shape, coverage, frame_rng(seed, key), **path_options)
        out.append(sample_frame(x, p))
        cov.append(p.coverage)
    return np.stack(out), cov


def stack_signal(frames, lazy=False, chunk=None, metadata=None):
    """(n, H, W) array as a Signal2D stack (lazy with ``chunk`` frames per chunk if asked).

    ``metadata``: items set on the signal (e.g. the Poisson variance model).
    """
    import hyperspy.api as hs

    arr = np.asarray(frames, np.float32)
    if lazy:
        import dask.array as da

        d = da.from_array(arr, chunks=(chunk or 1,) + arr.shape[1:])
        s = hs.signals.Signal2D(d).as_lazy()
    else:
        s = hs.signals.Signal2D(arr)
    for key, value in (metadata or {}).items():
        s.metadata.set_item(key, value)
    return s


def complete_stack(partials, method, *, model=None, batch_size=None, device=None, workers=None, keep_measured=False):
    """Complete (n, H, W) partial scans through the engine (``complete_partial_scan``, non-lazy).

    ``workers``: dask threaded-scheduler workers (default: dask's default). ``keep_measured`` is False:
    the benchmarks' protocol measures each method's own output at every pixel (as before the package's
    default became True).
    """
    import dask

    from hyperspy_partialscan import complete_partial_scan

    kw = {"model": model, "device": device} if method == "generator" else {}
    cfg = {"scheduler": "threads"}
    if workers:
        cfg["num_workers"] = int(workers)
    with dask.config.set(cfg):
        out = complete_partial_scan(stack_signal(partials), method, navigation_chunks=batch_size,
                                    keep_measured=keep_measured, show_progressbar=False, **kw)
    return np.asarray(out.data).reshape(np.shape(partials))


def denoise_stack(frames, method, *, model=None, batch_size=None, workers=None, metadata=None, **params):
    """Denoise (n, H, W) frames through the engine (``denoise``, non-lazy).

    ``metadata``: items set on the signal first (e.g. the Poisson variance model).
    """
    import dask

    from hyperspy_partialscan.denoising import denoise

    s = stack_signal(frames, metadata=metadata)
    if method == "generator":
        params["model"] = model
    cfg = {"scheduler": "threads"}
    if workers:
        cfg["num_workers"] = int(workers)
    with dask.config.set(cfg):
        out = denoise(s, method, navigation_chunks=batch_size, show_progressbar=False, **params)
    return np.asarray(out.data).reshape(np.shape(frames))


def parse_coverage(text):
    """A coverage from ``"1/20"``, ``"0.05"`` or a denominator ``"20"`` (values above 1 mean 1/value)."""
    text = str(text).strip()
    if "/" in text:
        num, den = text.split("/", 1)
        value = float(num) / float(den)
    else:
        value = float(text)
        if value > 1:
            value = 1.0 / value
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"coverage must be in (0, 1], got {text!r}")
    return value


def coverage_label(c):
    """``1/20``-style label of a coverage."""
    inv = 1.0 / c
    return f"1/{inv:.0f}" if abs(inv - round(inv)) < 1e-6 else f"1/{inv:.3g}"


# --------------------------------------------------------------------------- metrics and timing


def timed(func, *args, **kwargs):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - t0


def median_time(func, repeats=3, warmup=0):
    """Median wall time (s) of ``func()`` over ``repeats`` calls (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        func()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def human_seconds(s):
    if s is None or s != s:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


# --------------------------------------------------------------------------- output


def _fmt(v, floatfmt):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "-" if v != v else format(v, floatfmt)
    return str(v)


def markdown_table(rows, columns=None, floatfmt=".3g", headers=None):
    """A GitHub markdown table of dict rows (``columns``: keys to show, in order)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])
    headers = headers or columns
    cells = [[_fmt(r.get(c), floatfmt) for c in columns] for r in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out) + "\n"


def write_csv(rows, path):
    """Write dict rows (union of their keys, in first-seen order) as CSV."""
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:  # a report is replaced only when complete
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    return path


def write_report(path, title, sections, env=None):
    """Markdown report: a title, ``(heading, text)`` sections and the environment."""
    parts = [f"# {title}\n"]
    for heading, text in sections:
        parts.append(f"## {heading}\n\n{text.rstrip()}\n")
    if env is not None:
        parts.append("## Environment\n\n```json\n" + json.dumps(env, indent=2, default=str) + "\n```\n")
    write_text_atomic(path, "\n".join(parts))
    return path


def banner(text):
    print(f"\n=== {text} ===", flush=True)


# --------------------------------------------------------------------------- command line (interim models)


def _main(argv=None):
    p = argparse.ArgumentParser(description="interim models for developing the benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="export a training checkpoint.pt (either network) as a model")
    e.add_argument("checkpoint")
    e.add_argument("path")
    e.add_argument("--architecture", default=None,
                   help="PartialScanGenerator, DenoisingUNet or UncertaintyUNet (default: the one the checkpoint "
                        "records; needed for checkpoints written before it was recorded)")
    r = sub.add_parser("random", help="randomly initialised model (smoke tests only)")
    r.add_argument("path")
    r.add_argument("--task", choices=["completion", "denoising"], required=True)
    a = p.parse_args(argv)
    if a.cmd == "export":
        from hyperspy_partialscan.training import export_checkpoint

        out = export_checkpoint(a.checkpoint, a.path, architecture=a.architecture, extra={"interim": True})
    else:
        out = random_model(a.path, a.task)
    print(out)


if __name__ == "__main__":
    _main()
