"""The ``hyperspy-partialscan`` command line.

Subcommands: ``simulate`` (full images to simulated partial scans), ``complete``
(fill the unsampled pixels), ``demo`` (the main job on built-in data) and
``train`` (train or fine-tune a completion generator). Run
``hyperspy-partialscan SUBCOMMAND --help`` for the options. Errors are reported
on stderr with exit status 2 (no traceback; add ``--verbose`` to see one).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .completion import COMPLETION_METHODS
from .denoising import DENOISING_METHODS, FIT_METHODS
from .paths import path_names

__all__ = ["main", "training_frames", "load_images"]

_log = logging.getLogger(__name__)


class CLIError(Exception):
    """An error reported to the user as ``error: <message>`` with exit status 2."""


def training_frames(sources, *, max_frames_per_file=8, synthetic=0, seed=0):
    """Frames for training: files/folders/globs plus ``synthetic`` generated specimens.

    Stacks contribute at most ``max_frames_per_file`` frames (evenly spaced) so
    that long tilt series or movies don't dominate.
    """
    import numpy as np

    from .io import read_frames
    from .specimens import atomic_lattice, nanoparticle_field

    frames = read_frames(sources, max_frames_per_file=max_frames_per_file) if sources else []
    rng = np.random.default_rng(seed)
    for i in range(synthetic):
        size = int(rng.choice([512, 768, 1024]))
        if i % 2:
            frames.append(nanoparticle_field((size, size), seed=int(rng.integers(2**31))))
        else:
            # lattice constants log-uniform over 6-45 px: up to about twice the
            # spiral's arm gap at 1/20, where sparse samples alias the lattice
            spacing = float(np.exp(rng.uniform(np.log(6), np.log(45))))
            frames.append(atomic_lattice((size, size), spacing=spacing, seed=int(rng.integers(2**31))))
    return frames


# --------------------------------------------------------------------------- file handling


def _to_gray(signal):
    """An RGB(A) image signal as a grey-level Signal2D (mean of the colour channels)."""
    s = signal.deepcopy()
    s.change_dtype("uint16" if "16" in str(s.data.dtype) else "uint8")  # -> Signal1D with a channel axis
    gray = s.isig[:3].mean(axis=-1).transpose(signal_axes=2)
    gray.metadata.General.title = signal.metadata.General.title
    return gray


def load_images(path, lazy=False):
    """Load ``path`` with HyperSpy and return its 2-D image signals.

    Files holding several signals (a survey image and a spectrum, ...) give
    their 2-D ones; RGB(A) images are converted to grey levels.

    Raises
    ------
    CLIError
        Missing or unreadable file, or no 2-D signal in it.
    """
    import hyperspy.api as hs

    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file {str(path)!r} does not exist")
    if p.is_dir() and p.suffix.lower() != ".zspy":
        raise CLIError(f"input {str(path)!r} is a folder; give a file")
    try:
        loaded = hs.load(str(p), lazy=lazy)
    except Exception as err:  # the readers raise anything from ValueError to struct.error
        raise CLIError(f"cannot read {str(path)!r} with RosettaSciIO: {type(err).__name__}: {err}") from err
    signals = loaded if isinstance(loaded, list) else [loaded]
    images, others = [], []
    for s in signals:
        if s.axes_manager.signal_dimension != 2:
            others.append(s)
            continue
        if s.data.dtype.names is not None:  # rgb8, rgba16, ...
            s = _to_gray(s)
        images.append(s)
    if not images:
        found = ", ".join(f"{type(s).__name__} with {s.axes_manager.signal_dimension}-D signal" for s in others)
        raise CLIError(
            f"{str(path)!r} holds no 2-D image signal (found: {found or 'nothing'}); "
            "convert it first, e.g. with `s.transpose(signal_axes=2)` in HyperSpy"
        )
    if others:
        _log.info("%s: using %d 2-D signal(s), skipping %d other(s)", path, len(images), len(others))
    return images


def _output_paths(output, n):
    """One output path per signal: ``output`` itself, or ``stem_0.ext``, ``stem_1.ext``... for several."""
    out = Path(output)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def _check_outputs(inp, outputs, overwrite):
    for out in outputs:
        if out.resolve() == Path(inp).resolve():
            raise CLIError(f"the output {str(out)!r} is the input file; choose another output name")
        if out.exists() and not overwrite:
            raise CLIError(f"output {str(out)!r} exists; add --overwrite to replace it")
        if not out.parent.exists():
            raise CLIError(f"the output folder {str(out.parent)!r} does not exist")


def _writer_has_progressbar(path):
    """Whether the RosettaSciIO writer for ``path``'s extension takes ``show_progressbar`` (hspy, zspy, ...)."""
    import importlib
    import inspect

    from rsciio import IO_PLUGINS

    ext = Path(path).suffix.lstrip(".").lower() or "hspy"  # HyperSpy's default format
    for plugin in IO_PLUGINS:
        if plugin.get("writes") and ext in (e.lower() for e in plugin["file_extensions"]):
            try:
                writer = importlib.import_module(plugin["api"]).file_writer
            except (ImportError, AttributeError):
                return False
            return "show_progressbar" in inspect.signature(writer).parameters
    return False


def _save(signal, path, overwrite, show_progressbar):
    """Save; lazy signals are computed here, with a progress bar only if wanted."""
    try:
        if _writer_has_progressbar(path):  # these writers show a bar by default: pass our choice
            signal.save(str(path), overwrite=overwrite, show_progressbar=show_progressbar)
        elif signal._lazy and show_progressbar:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                signal.save(str(path), overwrite=overwrite)
        else:
            signal.save(str(path), overwrite=overwrite)
    except Exception as err:
        raise CLIError(f"cannot write {str(path)!r}: {type(err).__name__}: {err}") from err


def _describe(signal):
    shape = "x".join(str(n) for n in signal.data.shape)
    cov = ""
    if not signal._lazy:
        import numpy as np

        cov = f", {100 * float(np.isfinite(signal.data).mean()):.2f}% sampled"
    return f"{type(signal).__name__.replace('Lazy', '')} {shape}{cov}"


# --------------------------------------------------------------------------- subcommands


def _simulate(a):
    from .conversion import to_partial_scan
    from .paths import validate_coverage
    from .simulate import NoiseModel

    coverage = validate_coverage(a.coverage)
    noise = NoiseModel(dose=a.dose) if a.dose is not None else None
    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    _check_outputs(a.input, outputs, a.overwrite)
    show = not a.no_progressbar
    for i, (s, out) in enumerate(zip(images, outputs)):
        seed = a.seed + i if a.seed is not None else None
        ps = to_partial_scan(s, a.path, coverage, seed=seed, noise=noise, vary_per_frame=a.vary_per_frame,
                             batch_size=a.batch_size or 16, show_progressbar=show)
        _save(ps, out, a.overwrite, show)
        md = ps.metadata.Signal.Partial_scan
        shape = "x".join(str(n) for n in ps.data.shape)
        print(f"wrote {out}: {type(ps).__name__.replace('Lazy', '')} {shape}, {a.path} path, "
              f"{100 * md.coverage_measured:.2f}% of each frame sampled, seed {md.seed}")


def _complete(a):
    from .completion import complete_partial_scan
    from .conversion import as_partial_scan
    from .models import list_models

    if a.method == "generator" and a.model is None and not list_models("completion"):
        raise CLIError(
            "no completion model is installed with this package yet, so --method generator (the default) "
            "cannot run; use a classical method, e.g. --method linear, or give a trained model with --model PATH"
        )
    if a.model is not None and a.method != "generator":
        raise CLIError(f"--model is only used by --method generator, not {a.method!r}")
    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    _check_outputs(a.input, outputs, a.overwrite)
    show = not a.no_progressbar
    for s, out in zip(images, outputs):
        if a.unscanned_value is not None:
            s = as_partial_scan(s, unscanned_value=a.unscanned_value)
        elif not s._lazy:
            import numpy as np

            if np.issubdtype(s.data.dtype, np.number) and np.isfinite(s.data).all():
                print(f"note: {a.input} has no unsampled (NaN) pixel, so there is nothing to complete; if its "
                      "unscanned positions hold zeros, add --unscanned-value 0", file=sys.stderr)
        done = complete_partial_scan(s, a.method, model=a.model, batch_size=a.batch_size, device=a.device,
                                     keep_measured=a.keep_measured, show_progressbar=show)
        _save(done, out, a.overwrite, show)
        print(f"wrote {out}: {_describe(done)} ({a.method})")


def _demo(a):
    from .demo import run_demo

    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    kwargs = {"size": a.size} if a.size is not None else {}
    run_demo(a.output_dir, coverage=a.coverage, methods=methods, show_progressbar=not a.no_progressbar, **kwargs)


def _training_data(a):
    """Training frames, validation frames and the data description of a training command."""
    frames = training_frames(a.sources, max_frames_per_file=a.max_frames_per_file, synthetic=a.synthetic, seed=a.seed)
    if not frames:
        raise CLIError("no training frames (give sources and/or --synthetic N)")
    val = training_frames(a.val, max_frames_per_file=1) if a.val else None
    desc = {"sources": a.sources, "frames": len(frames), "synthetic": a.synthetic,
            "max_frames_per_file": a.max_frames_per_file, "val": a.val}
    return frames, val, desc


def _train(a):
    from .training import TrainConfig, train_completion

    frames, val, desc = _training_data(a)
    cfg = TrainConfig(iterations=a.iterations, batch_size=a.batch_size, crop=a.crop, lr=a.lr, width=a.width,
                      target=a.target, threads=a.threads, seed=a.seed, adversarial=a.adversarial)
    path = train_completion(frames, a.out, cfg, val_frames=val, init=a.init, resume=a.resume, name=a.name,
                            data_description=desc, show_progressbar=not a.no_progressbar,
                            max_seconds=a.max_minutes * 60 if a.max_minutes else None)
    print(f"model written to {path}")


def _denoise(a):
    from .denoising import denoise

    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    _check_outputs(a.input, outputs, a.overwrite)
    show = not a.no_progressbar
    for s, out in zip(images, outputs):
        done = denoise(s, a.method, model=a.model, batch_size=a.batch_size, device=a.device, sigma=a.sigma,
                       show_progressbar=show)
        _save(done, out, a.overwrite, show)
        print(f"wrote {out}: {_describe(done)} ({a.method})")


def _fit_denoiser(a):
    from .denoising import fit_denoiser

    images = load_images(a.input, lazy=False)
    if len(images) != 1:
        raise CLIError(f"{a.input} holds {len(images)} images; fit-denoiser needs exactly one signal (a frame or a stack)")
    init = None if a.init == "none" else a.init
    model = fit_denoiser(images[0], init=init, epochs=a.epochs, method=a.method, sigma=a.sigma,
                         keep_best=not a.keep_last, output=a.output, seed=a.seed, show_progressbar=not a.no_progressbar)
    tr = model.config["training"]
    if "sure_best" in tr:
        print(f"estimated error (SURE): {tr['sure_start']:.3g} before, {tr['sure_best']:.3g} kept (epoch "
              f"{tr['best_epoch']} of {a.epochs})")
    print(f"model written to {model.path} (use: hyperspy-partialscan denoise IN OUT --model {model.path}"
          + (f" --sigma {a.sigma:g}" if a.sigma is not None else "") + ")")


def _train_denoiser(a):
    from .training import train_denoiser

    frames, val, desc = _training_data(a)
    path = train_denoiser(frames, a.out, iterations=a.iterations, batch_size=a.batch_size, crop=a.crop,
                          width=a.width, lr=a.lr, seed=a.seed, threads=a.threads, val_frames=val, resume=a.resume,
                          max_seconds=a.max_minutes * 60 if a.max_minutes else None, name=a.name,
                          data_description=desc, show_progressbar=not a.no_progressbar, init=a.init,
                          invert=a.invert, dose_range=tuple(a.dose_range), context=a.context)
    print(f"model written to {path}")


# --------------------------------------------------------------------------- parser


def _add_training_args(p, *, name, iterations, batch_size, width):
    """Options shared by the training commands (the defaults differ per network)."""
    p.add_argument("--out", required=True, help="run folder (checkpoints, validation curve, model)")
    p.add_argument("--val", nargs="*", default=None, help="files, folders or globs for the validation curve")
    p.add_argument("--name", default=name, help="name of the exported model")
    p.add_argument("--iterations", type=int, default=iterations)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget; the LR schedule follows it")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=width)
    p.add_argument("--synthetic", type=int, default=0, help="add this many generated specimens")
    p.add_argument("--max-frames-per-file", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--no-progressbar", action="store_true")


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="hyperspy-partialscan",
        description="Simulate, complete and compare partial S/TEM scans (HyperSpy extension). "
        "Partial scans are float32 images whose unsampled pixels are NaN.",
        epilog="Run `hyperspy-partialscan demo` for a first look; `SUBCOMMAND --help` for options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details (and tracebacks of errors)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("simulate", help="turn full images into simulated partial scans",
                       description="Simulate partial scans of the 2-D images in any RosettaSciIO-readable file "
                       "and save them (NaN = unsampled pixel). Files with several images give OUTPUT_0, OUTPUT_1, ...")
    p.add_argument("input", help="any RosettaSciIO-readable file (.dm4, .emd, .hspy, .tif, ...)")
    p.add_argument("output", help="output file; the extension picks the format (.hspy, .zspy, ...)")
    p.add_argument("--path", default="spiral", choices=path_names(), help="scan path (default: spiral)")
    p.add_argument("--coverage", type=float, default=0.05, help="fraction of sampled pixels in (0, 1] (default 0.05)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the path and noise (default: random, recorded in the metadata)")
    p.add_argument("--dose", type=float, default=None, help="electrons per probe position at full scale (Poisson noise)")
    p.add_argument("--vary-per-frame", action="store_true", help="a different path for every frame of a stack")
    p.add_argument("--lazy", action="store_true", help="load and process lazily (dask), for data larger than memory")
    p.add_argument("--batch-size", type=int, default=None, help="frames per dask block (default 16)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")

    p = sub.add_parser("complete", help="complete partial scans (fill the unsampled pixels)",
                       description="Complete the partial scans (NaN = unsampled) in any RosettaSciIO-readable file. "
                       "Acquisitions that store unscanned positions as zeros need --unscanned-value 0.")
    p.add_argument("input", help="a partial scan in any RosettaSciIO-readable file")
    p.add_argument("output", help="output file; the extension picks the format (.hspy, .zspy, ...)")
    p.add_argument("--method", default="generator", choices=COMPLETION_METHODS,
                   help="completion method (default: generator, the trained network)")
    p.add_argument("--model", default=None, help="model name or path for --method generator (default: the shipped model)")
    p.add_argument("--unscanned-value", type=float, default=None,
                   help="treat pixels equal to this value as unsampled (e.g. 0 for zero-filled acquisitions)")
    p.add_argument("--keep-measured", action="store_true", help="put the measured samples back into the completion")
    p.add_argument("--lazy", action="store_true", help="load and process lazily (dask), for data larger than memory")
    p.add_argument("--batch-size", type=int, default=None, help="frames per batch (default: automatic)")
    p.add_argument("--device", default=None, help="torch device for the generator (default: CUDA, MPS, then CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")

    p = sub.add_parser("demo", help="the main job on built-in data: simulate, complete, compare",
                       description="Simulate spiral, grid and random partial scans of two built-in specimens, "
                       "complete them with every available method and write an RMSE table (CSV, markdown) "
                       "and a comparison figure. Needs no download.")
    p.add_argument("--output-dir", default="partialscan_demo",
                   help="folder for the table and figure (default: partialscan_demo)")
    p.add_argument("--coverage", type=float, default=0.05, help="fraction of sampled pixels (default 0.05)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all available)")
    p.add_argument("--size", type=int, default=None, help="specimen size in pixels (default 512)")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")

    p = sub.add_parser("train", help="train or fine-tune a completion generator")
    p.add_argument("sources", nargs="*", help="files, folders or globs of training images")
    _add_training_args(p, name="completion_model", iterations=10000, batch_size=16, width=32)
    p.add_argument("--target", choices=["blurred", "raw"], default="blurred")
    p.add_argument("--init", default=None, help="fine-tune from this model (name or path)")
    p.add_argument("--adversarial", action="store_true", help="add the multi-scale adversarial stage")

    p = sub.add_parser("denoise", help="denoise images (trained network or classical filters)",
                       description="Denoise the 2-D images in any RosettaSciIO-readable file. Partial scans must be "
                       "completed first (hyperspy-partialscan complete).")
    p.add_argument("input", help="any RosettaSciIO-readable file")
    p.add_argument("output", help="output file; the extension picks the format")
    p.add_argument("--method", default="generator", choices=DENOISING_METHODS,
                   help="denoising method (default: generator, the trained network)")
    p.add_argument("--model", default=None, help="denoising model name or path (default: the shipped model)")
    p.add_argument("--sigma", type=float, default=None, help="known noise standard deviation in data units")
    p.add_argument("--lazy", action="store_true", help="load and process lazily (dask)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per batch (default: automatic)")
    p.add_argument("--device", default=None, help="torch device (default: CUDA, MPS, then CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")

    p = sub.add_parser("fit-denoiser", help="fine-tune the denoiser on your own noisy data (no clean images needed)")
    p.add_argument("input", help="noisy image(s) in any RosettaSciIO-readable file")
    p.add_argument("output", help="model path to write (NAME.safetensors + NAME.json)")
    p.add_argument("--method", default="blind_spot", choices=FIT_METHODS,
                   help="blind_spot or sure (any data), noise2noise (repeated exposures of one field)")
    p.add_argument("--init", default="default", help="model to start from ('default', a name or path, or 'none')")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--sigma", type=float, default=None,
                   help="known noise standard deviation in data units (default: the metadata's Poisson model, "
                        "else estimated)")
    p.add_argument("--keep-last", action="store_true",
                   help="keep the last epoch's weights (default: those with the lowest SURE error estimate, "
                        "the starting weights included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progressbar", action="store_true")

    p = sub.add_parser("train-denoiser", help="train a denoising network on clean images degraded on the fly")
    p.add_argument("sources", nargs="*", help="files, folders or globs of clean training images")
    _add_training_args(p, name="denoising_model", iterations=5000, batch_size=8, width=16)
    p.add_argument("--init", default=None, help="fine-tune from this denoising model (name or path)")
    p.add_argument("--invert", type=float, default=0.25,
                   help="fraction of crops contrast-inverted (bright-field-like), default 0.25")
    p.add_argument("--dose-range", type=float, nargs=2, default=[5.0, 1000.0], metavar=("LOW", "HIGH"),
                   help="electrons per pixel at full scale, drawn log-uniformly (default 5 1000)")
    p.add_argument("--context", type=int, default=4,
                   help="side, in crop sides, of the window whose min/max normalises each crop (default 4; "
                        "1: each crop's own range)")
    return parser.parse_args(argv)


_HANDLERS = {"simulate": _simulate, "complete": _complete, "demo": _demo, "train": _train, "denoise": _denoise,
             "fit-denoiser": _fit_denoiser, "train-denoiser": _train_denoiser}


def main(argv=None):
    """Run the command line (``hyperspy-partialscan --help``); returns the exit status.

    Errors are printed as ``error: ...`` on stderr with status 2; usage errors
    (unknown option or choice) exit with status 2 through argparse.
    """
    a = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _HANDLERS[a.command](a)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # report, don't dump a traceback on the user
        if a.verbose:
            _log.exception("%s failed", a.command)
        if isinstance(err, (CLIError, ValueError, OSError, TypeError)):
            msg = str(err)
        else:
            msg = f"{type(err).__name__}: {err}"
            if not a.verbose:
                msg += " (run `hyperspy-partialscan -v ...` for the traceback)"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
