"""The main job on built-in data: simulate partial scans, complete them, compare.

:func:`run_demo` needs nothing from outside the package (no download, no
sample files): its two specimens are generated on the spot,

* ``atomic_columns``: HyperSpy's :func:`hyperspy.api.data.atomic_resolution_image`
  (Gaussian atomic columns on a square lattice, 0.2 nm apart, 0.015 nm pixels,
  i.e. a 13-pixel lattice period), and
* ``nanoparticles``: :func:`hyperspy_partialscan.specimens.nanoparticle_field`
  (faceted particles, some with lattice fringes, on an amorphous support).

Each is scanned partially along spiral, grid and random paths and completed
with every available method; the result is an RMSE table (CSV and markdown)
and a comparison figure. Everything is seeded, so runs are reproducible.
"""

from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path

import numpy as np

from ._atomic import atomic_path, write_text_atomic
from .inpainting import _single_blas_thread
from .metrics import rmse_percent

__all__ = ["run_demo", "demo_specimens", "available_methods", "DEMO_PATHS", "DEMO_SIZE"]

#: scan paths compared by the demo
DEMO_PATHS = ("spiral", "grid", "random")
#: default specimen size in pixels (biharmonic inpainting, the slowest method, takes ~4 CPU-seconds per 512x512 frame)
DEMO_SIZE = 512
#: seed of the nanoparticle specimen and base seed of the scan paths
DEMO_SEED = 2020
#: pixel size given to the synthetic nanoparticle field (nm)
NANOPARTICLE_PIXEL_NM = 0.08

_SPECIMEN_LABELS = {"atomic_columns": "atomic columns", "nanoparticles": "nanoparticles"}


def demo_specimens(size=DEMO_SIZE, seed=DEMO_SEED):
    """The demo's two specimens as Signal2D (generated, nothing is downloaded).

    Parameters
    ----------
    size : int
        Frame size in pixels (square frames).
    seed : int
        Seed of the nanoparticle field (the atomic lattice is deterministic).

    Returns
    -------
    dict
        ``{"atomic_columns": Signal2D, "nanoparticles": Signal2D}``, float32.
    """
    import hyperspy.api as hs

    from .specimens import nanoparticle_field

    size = int(size)
    if size < 32:
        raise ValueError(f"the demo needs specimens of at least 32x32 pixels, got size={size}")
    atoms = hs.data.atomic_resolution_image(size=size)  # computed by HyperSpy, no download
    atoms.change_dtype("float32")
    atoms.metadata.General.title = "Atomic columns (hs.data.atomic_resolution_image)"
    particles = hs.signals.Signal2D(nanoparticle_field((size, size), seed=seed))
    particles.metadata.General.title = "Nanoparticles (specimens.nanoparticle_field)"
    for s, scale in ((atoms, None), (particles, NANOPARTICLE_PIXEL_NM)):
        for axis, name in zip(s.axes_manager.signal_axes, ("x", "y")):
            axis.name = name
            if scale is not None:
                axis.scale, axis.units = scale, "nm"
        s.metadata.set_item("Signal.quantity", "Intensity (a.u.)")
    return {"atomic_columns": atoms, "nanoparticles": particles}


def available_methods():
    """Completion methods usable here: the classical ones, plus ``"generator"`` if a model is shipped."""
    from .inpainting import CLASSICAL_METHODS
    from .models import list_models

    methods = list(CLASSICAL_METHODS)
    if list_models("completion"):
        methods.append("generator")
    return methods


def _default_model():
    from .models import DEFAULT_MODELS, list_models

    names = list_models("completion")
    if not names:
        return None
    return DEFAULT_MODELS["completion"] if DEFAULT_MODELS["completion"] in names else names[0]


def _resolve_methods(methods, model):
    from .completion import COMPLETION_METHODS

    if methods is None:
        methods = available_methods()
        if "generator" not in methods:
            if model is None:
                print("note: no trained completion model is shipped with this installation yet, so the "
                      "'generator' method is skipped (train one with `hyperspy-partialscan train`)")
            else:
                methods.append("generator")
        return methods
    if isinstance(methods, str):
        methods = [methods]
    methods = list(dict.fromkeys(methods))  # unique, in order
    if not methods:
        raise ValueError("give at least one completion method")
    unknown = [m for m in methods if m not in COMPLETION_METHODS]
    if unknown:
        raise ValueError(f"unknown completion method(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(COMPLETION_METHODS)}")
    if "generator" in methods and model is None and _default_model() is None:
        raise ValueError("the 'generator' method needs a trained model, and none is shipped with this "
                         "installation yet; leave it out (e.g. methods=['linear']) or pass model=PATH")
    return methods


def run_demo(output_dir, coverage=0.05, methods=None, show_progressbar=True, *, size=DEMO_SIZE, paths=DEMO_PATHS,
             seed=DEMO_SEED, model=None, figure=True, verbose=True):
    """Simulate, complete and compare partial scans of built-in specimens.

    Two specimens (see :func:`demo_specimens`) are scanned along each of
    ``paths`` at ``coverage`` and completed with each method; the error of every
    completion against the full frame is tabulated.

    Parameters
    ----------
    output_dir : str or pathlib.Path
        Folder for ``rmse_table.csv``, ``rmse_table.md`` and ``comparison.png``
        (created if needed).
    coverage : float
        Fraction of sampled pixels, in (0, 1].
    methods : list of str, optional
        Completion methods; default: every available one (the classical
        methods, and ``"generator"`` when a trained model is shipped, with a
        printed note when it is not).
    show_progressbar : bool
        Progress bar over the completions.
    size : int
        Specimen frame size in pixels (default 512).
    paths : sequence of str
        Scan paths to compare.
    seed : int
        Seed of the nanoparticle specimen; the scan of row ``k`` uses ``seed + k``.
    model : str or pathlib.Path, optional
        Generator model (default: the shipped default model).
    figure : bool
        Write the comparison figure.
    verbose : bool
        Print the table, timings and written files.

    Returns
    -------
    list of dict
        One row per specimen and path: ``specimen``, ``path``, ``coverage``
        (measured fraction), ``rmse_<method>`` (RMSE in % of the specimen's
        intensity range, against the full frame), ``rmse_blurred_<method>``
        (the same against the Gaussian-blurred frame, 5x5 kernel, sigma 2.5 px)
        and ``time_<method>_s`` (seconds to complete that frame).
    """
    import dask
    from tqdm.auto import tqdm

    from .completion import complete_partial_scan
    from .conversion import to_partial_scan
    from .paths import PATHS, validate_coverage
    from .uncertainty import shipped_uncertainty_models

    start = time.perf_counter()
    coverage = validate_coverage(coverage)
    paths = [paths] if isinstance(paths, str) else list(paths)
    bad = [p for p in paths if p not in PATHS]
    if bad or not paths:
        raise ValueError(f"unknown scan path(s) {bad}; choose from {', '.join(PATHS)}")
    methods = _resolve_methods(methods, model)
    if "generator" in methods:
        from .models import load_model

        model = load_model(model if model is not None else _default_model(), task="completion")
        if verbose:
            print(f"generator model: {model.name} ({model.path})")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    specimens = demo_specimens(size, seed)
    cases = []  # (specimen key, path, truth array, partial scan signal)
    for name, spec in specimens.items():
        for path in paths:
            ps = to_partial_scan(spec, path, coverage, seed=seed + len(cases), show_progressbar=False)
            cases.append((name, path, np.asarray(spec.data), ps))

    from .metrics import blur_target

    blurred = [blur_target(truth.astype(np.float64)) for _, _, truth, _ in cases]
    rows, completed, sigmas = [], {}, {}
    with_sigma = "generator" in methods and bool(shipped_uncertainty_models(model.sha256))
    bar = tqdm(total=len(cases) * len(methods), desc="completing", unit="frame", disable=not show_progressbar)
    # one frame per call: dask's synchronous scheduler avoids thread hand-offs that distort the timings
    with bar, dask.config.set(scheduler="synchronous"):
        for i, (name, path, truth, ps) in enumerate(cases):
            row = {"specimen": name, "path": path, "coverage": round(float(np.isfinite(ps.data).mean()), 5)}
            times = {}
            for method in methods:
                bar.set_postfix_str(f"{name} {path} {method}")
                t0 = time.perf_counter()
                with _single_blas_thread() if method != "generator" else contextlib.nullcontext():
                    done = complete_partial_scan(ps, method, model=model if method == "generator" else None,
                                                 show_progressbar=False)
                times[method] = time.perf_counter() - t0
                completed[i, method] = np.asarray(done.data)
                row[f"rmse_{method}"] = round(rmse_percent(done.data, truth, data_range=None), 3)
                row[f"rmse_blurred_{method}"] = round(rmse_percent(done.data, blurred[i], data_range=None), 3)
                bar.update()
            row.update({f"time_{m}_s": round(t, 4) for m, t in times.items()})
            if with_sigma:
                sigmas[i] = _sigma(ps, model, completed[i, "generator"], blurred[i], row)
            rows.append(row)

    csv_path, md_path, png_path = out_dir / "rmse_table.csv", out_dir / "rmse_table.md", out_dir / "comparison.png"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:  # outputs replaced only when complete
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = format_table(rows, methods)
    table_blurred = format_table(rows, methods, key="rmse_blurred", times=False)
    write_text_atomic(md_path,
        f"# Partial-scan completion demo\n\n"
        f"{len(specimens)} built-in specimens ({size}x{size} px) scanned at {100 * coverage:g}% coverage. "
        f"RMSE in % of each specimen's intensity range, against the full frame (lower is better; best in bold).\n\n"
        f"{table}\n\n"
        f"Against the Gaussian-blurred frame (5x5, sigma 2.5 px: the generator's training target and the "
        f"error measure of Ede & Beanland 2020, which discounts detail finer than the scan can resolve):\n\n"
        f"{table_blurred}\n"
        + (f"\nA spiral samples densely along its arms but only every ~{1 / coverage:.0f} px across them: finer "
           "structure, such as the 13 px period of the atomic columns, is aliased whatever the completion method.\n"
           if "spiral" in paths else "")
        + _uncertainty_text(rows)
    )
    if figure:
        comparison_figure(cases, completed, rows, methods, coverage, png_path)
        if sigmas:
            uncertainty_figure(cases, completed, sigmas, blurred, rows, out_dir / "uncertainty.png")
    if verbose:
        print()
        print(f"RMSE (% of the specimen's range) of {len(methods)} completion methods at {100 * coverage:g}% coverage, "
              f"{size}x{size} px specimens:\n")
        print(table)
        print("\nagainst the Gaussian-blurred frame (5x5, sigma 2.5 px; the generator's training target):\n")
        print(table_blurred)
        print()
        written = [csv_path, md_path] + ([png_path] if figure else [])
        written += [out_dir / "uncertainty.png"] if figure and sigmas else []
        if sigmas:
            print(_uncertainty_text(rows).strip())
        print("wrote " + ", ".join(str(p) for p in written))
        print(f"total time {time.perf_counter() - start:.1f} s")
    return rows


def format_table(rows, methods, key="rmse", times=True):
    """Markdown table: a row per specimen and path, a column per method (``<key>_<method>`` values),
    plus the mean time per frame if ``times``."""
    head = ["specimen", "path", "coverage"] + list(methods)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(methods)) + "|"]
    for r in rows:
        vals = [r[f"{key}_{m}"] for m in methods]
        best = min(vals)
        cells = [f"**{v:.2f}**" if v == best and len(methods) > 1 else f"{v:.2f}" for v in vals]
        label = _SPECIMEN_LABELS.get(r["specimen"], r["specimen"])
        lines.append(f"| {label} | {r['path']} | {100 * r['coverage']:.2f}% | " + " | ".join(cells) + " |")
    if not times:
        return "\n".join(lines)
    mean_t = [np.mean([r[f"time_{m}_s"] for r in rows]) for m in methods]
    lines.append("| *time per frame (s)* | | | " + " | ".join(f"{t:.2f}" for t in mean_t) + " |")
    return "\n".join(lines)


def _uncertainty_text(rows):
    """Markdown lines on the generator's uncertainty (empty without one)."""
    if "within_sigma_generator" not in rows[0]:
        return ""
    cases = ", ".join(f"{_SPECIMEN_LABELS.get(r['specimen'], r['specimen'])} {r['path']} "
                      f"{100 * r['within_sigma_generator']:.0f} % / {100 * r['within_2sigma_generator']:.0f} %"
                      for r in rows)
    return ("\nPer-pixel uncertainty of the generator (`uncertainty=True`; uncertainty.png shows sigma beside the "
            f"actual error): unsampled pixels whose error lies within sigma / 2 sigma: {cases} (a calibrated "
            "sigma gives about 68 % / 95 %).\n")


def _sigma(ps, model, completed, blurred, row):
    """The generator's per-pixel uncertainty of one case; adds its calibration figures to ``row``."""
    from .completion import complete_partial_scan

    done, sigma = complete_partial_scan(ps, "generator", model=model, uncertainty=True, show_progressbar=False)
    if not np.array_equal(np.asarray(done.data), completed):
        raise RuntimeError("the completion with uncertainty differs from the completion alone")
    unsampled = ~np.isfinite(np.asarray(ps.data))
    err, sig = np.abs(completed - blurred)[unsampled], np.asarray(sigma.data)[unsampled]
    row["within_sigma_generator"] = round(float(np.mean(err <= sig)), 3)
    row["within_2sigma_generator"] = round(float(np.mean(err <= 2 * sig)), 3)
    return np.asarray(sigma.data)


def uncertainty_figure(cases, completed, sigmas, blurred, rows, path):
    """A row per case: the generator's completion, its predicted sigma and its actual error (same colour scale)."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.3 * len(sigmas) + 0.5), dpi=110, layout="constrained")
    axes = np.asarray(fig.subplots(len(sigmas), 3, squeeze=False))
    for r, i in enumerate(sorted(sigmas)):
        name, scan, truth, _ = cases[i]
        err = np.abs(completed[i, "generator"] - blurred[i])
        top = float(np.percentile(sigmas[i], 99))
        panels = [("generator completion", completed[i, "generator"], "gray", np.percentile(truth, [0.5, 99.5])),
                  ("predicted sigma", sigmas[i], "magma", (0, top)),
                  (f"|error| vs blurred truth\n{100 * rows[i]['within_sigma_generator']:.0f}% within sigma",
                   err, "magma", (0, top))]
        for j, (title, img, cmap, (lo, hi)) in enumerate(panels):
            im = axes[r, j].imshow(img, cmap=mpl.colormaps[cmap], vmin=lo, vmax=hi)
            axes[r, j].set_title(title, fontsize=8.5)
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
        fig.colorbar(im, ax=axes[r, 1:], fraction=0.05)
        axes[r, 0].set_ylabel(f"{_SPECIMEN_LABELS.get(name, name)}, {scan}", fontsize=9)
    fig.suptitle("How far to trust each pixel: predicted sigma beside the actual error", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def comparison_figure(cases, completed, rows, methods, coverage, path):
    """Grid of panels: a row per specimen and path; truth, partial scan, then each method."""
    import matplotlib as mpl
    import matplotlib.patches  # noqa: F401  (mpl.patches)
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    ncols = 2 + len(methods)
    nrows = len(cases)
    fig = Figure(figsize=(2.0 * ncols, 2.15 * nrows + 0.5), dpi=110, layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    gray = mpl.colormaps["gray"].with_extremes(bad="#4f74d0")  # unsampled pixels in the partial scan: blue
    for i, ((name, scan, truth, ps), row) in enumerate(zip(cases, rows)):
        lo, hi = np.percentile(truth, [0.5, 99.5])
        # sparse samples vanish when a whole frame is shrunk to a panel: show the partial scan's centre, zoomed
        h, w = truth.shape
        ch, cw = max(min(h, 32), h // 4), max(min(w, 32), w // 4)
        top, left = (h - ch) // 2, (w - cw) // 2
        zoom = np.asarray(ps.data)[top : top + ch, left : left + cw]
        panels = [("truth", truth, "antialiased"),
                  (f"{scan} scan, {100 * row['coverage']:.1f}%\n(centre, x{w / cw:g} zoom)", zoom, "nearest")]
        panels += [(f"{m}\nRMSE {row[f'rmse_{m}']:.2f}%", completed[i, m], "antialiased") for m in methods]
        for j, (title, img, interp) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap=gray, vmin=lo, vmax=hi, interpolation=interp)
            ax.set_title(title, fontsize=8.5)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].add_patch(mpl.patches.Rectangle((left - 0.5, top - 0.5), cw, ch, fill=False, lw=1, ec="tab:orange"))
        axes[i, 0].set_ylabel(f"{_SPECIMEN_LABELS.get(name, name)}, {scan}", fontsize=9)
    fig.suptitle(f"Partial-scan completion at {100 * coverage:g}% coverage (RMSE in % of the specimen's intensity "
                 "range, against the full frame; blue = unsampled; orange box = zoomed region)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    return path
