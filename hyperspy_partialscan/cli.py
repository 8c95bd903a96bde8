"""The ``hyperspy-partialscan`` command line.

Subcommands:

- ``simulate``: turn full images into simulated partial scans;
- ``complete``: fill the unsampled pixels of partial scans;
- ``adaptive``: scan adaptively with a simulated microscope (the data decide where to scan next);
- ``demo``: the main job on built-in data (simulate, complete, compare);
- ``train``: train or fine-tune a completion generator;
- ``denoise``: denoise images (trained network or classical filters);
- ``fit-denoiser``: fine-tune the denoiser on your own noisy data;
- ``train-denoiser``: train a denoising network on clean images.

Run ``hyperspy-partialscan SUBCOMMAND --help`` for the options. Errors are
reported as one line on stderr with exit status 2 (no traceback; add
``--verbose`` to see one); Ctrl-C exits with status 130. Outputs are written
beside their targets and renamed over them only when complete, so a failed
run leaves the input and any previous output untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from ._atomic import atomic_path, same_file
from ._cli_args import CLIError, parse_args

__all__ = ["main", "load_images"]

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- file handling


def _to_gray(signal):
    """An RGB(A) image signal as a grey-level Signal2D (mean of the colour channels)."""
    s = signal.deepcopy()
    s.change_dtype("uint16" if "16" in str(s.data.dtype) else "uint8")  # -> Signal1D with a channel axis
    gray = s.isig[:3].mean(axis=-1).transpose(signal_axes=2)
    gray.metadata.General.title = signal.metadata.General.title
    return gray


def _notice(message):
    """A one-line note on stderr (what the CLI did on the user's behalf)."""
    print(f"note: {message}", file=sys.stderr)


def _signal_label(i, s):
    title = s.metadata.get_item("General.title", "") or "untitled"
    shape = "x".join(str(n) for n in s.data.shape)
    return f"[{i}] {title!r} ({type(s).__name__.replace('Lazy', '')} {shape})"


def load_images(path, lazy=False):
    """Load ``path`` with HyperSpy and return its 2-D image signals.

    Files holding several signals (a survey image and a spectrum, ...) give
    their 2-D ones, and a one-line note on stderr names those skipped; RGB(A)
    images are converted to grey levels (mean of R, G and B), with a note.

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
    if not os.access(p, os.R_OK):
        raise CLIError(f"input file {str(path)!r} is not readable (permission denied)")
    try:
        loaded = hs.load(str(p), lazy=lazy)
    except Exception as err:  # the readers raise anything from ValueError to struct.error
        raise CLIError(f"cannot read {str(path)!r} with RosettaSciIO: {type(err).__name__}: {err}") from err
    signals = loaded if isinstance(loaded, list) else [loaded]
    images, others = [], []
    for i, s in enumerate(signals):
        if s.axes_manager.signal_dimension != 2:
            others.append(_signal_label(i, s))
            continue
        if s.data.dtype.names is not None:  # rgb8, rgba16, ...
            s = _to_gray(s)
            _notice(f"{path}: signal {i} is an RGB(A) image ({''.join(signals[i].data.dtype.names)}); "
                    "converted to grey levels (mean of the R, G and B channels, alpha ignored)")
        images.append(s)
    if not images:
        raise CLIError(
            f"{str(path)!r} holds no 2-D image signal (found: {', '.join(others) or 'nothing'}); "
            "convert it first, e.g. with `s.transpose(signal_axes=2)` in HyperSpy"
        )
    if others:
        _notice(f"{path}: using {len(images)} 2-D signal(s), skipping {len(others)} other(s): {', '.join(others)}")
    return images


def _output_paths(output, n):
    """One output path per signal: ``output`` itself, or ``stem_0.ext``, ``stem_1.ext``... for several.

    An output without extension gets ``.hspy``, as HyperSpy's ``save`` does.
    """
    out = Path(output)
    if not out.suffix:
        out = out.with_name(out.name + ".hspy")
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def _writable_formats():
    """Lower-case extension -> RosettaSciIO plugin dict, for the plugins that write."""
    from rsciio import IO_PLUGINS

    return {e.lower(): plugin for plugin in IO_PLUGINS if plugin.get("writes")
            for e in plugin["file_extensions"]}


def _check_format(output):
    """Refuse an output extension no RosettaSciIO plugin writes (before anything is computed)."""
    ext = Path(output).suffix.lstrip(".").lower() or "hspy"
    formats = _writable_formats()
    if ext not in formats:
        raise CLIError(f"cannot write {str(output)!r}: no RosettaSciIO writer for '.{ext}'; "
                       f"use one of {', '.join('.' + e for e in sorted(formats))}")


def _check_outputs(inp, outputs, overwrite):
    for out in outputs:
        _check_format(out)
        if same_file(out, inp) or out.resolve() == Path(inp).resolve():
            raise CLIError(f"the output {str(out)!r} is the input file {str(inp)!r} (same file, or a link to it); "
                           "choose another output name")
        if out.is_dir() and out.suffix.lower() != ".zspy":
            raise CLIError(f"the output {str(out)!r} is a folder; give a file name")
        if os.path.lexists(out) and not overwrite:
            raise CLIError(f"output {str(out)!r} exists; add --overwrite to replace it")
        if not out.parent.is_dir():
            raise CLIError(f"the output folder {str(out.parent)!r} does not exist")


def _writer_has_progressbar(path):
    """Whether the RosettaSciIO writer for ``path``'s extension takes ``show_progressbar`` (hspy, zspy, ...)."""
    import importlib
    import inspect

    plugin = _writable_formats().get(Path(path).suffix.lstrip(".").lower() or "hspy")
    if plugin is None:
        return False
    try:
        writer = importlib.import_module(plugin["api"]).file_writer
    except (ImportError, AttributeError):
        return False
    return "show_progressbar" in inspect.signature(writer).parameters


def _write(signal, tmp, show_progressbar):
    """Save ``signal`` to ``tmp``; lazy signals are computed here, with a progress bar only if wanted."""
    if _writer_has_progressbar(tmp):  # these writers show a bar by default: pass our choice
        signal.save(str(tmp), overwrite=True, show_progressbar=show_progressbar)
    elif signal._lazy and show_progressbar:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            signal.save(str(tmp), overwrite=True)
    else:
        signal.save(str(tmp), overwrite=True)
    if not os.path.lexists(tmp):
        raise OSError(f"the writer did not create {tmp}")


def _save(signal, path, show_progressbar):
    """Save ``signal`` as ``path`` atomically: written beside it, renamed over it only when complete.

    Whether ``path`` may be replaced was checked up front (:func:`_check_outputs`).
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            _write(signal, tmp, show_progressbar)
    except (CLIError, MemoryError):
        raise
    except Exception as err:
        kept = " (the existing file is unchanged)" if os.path.lexists(path) else ""
        raise CLIError(f"cannot write {str(path)!r}{kept}: {type(err).__name__}: {err}") from err


def _describe(signal):
    shape = "x".join(str(n) for n in signal.data.shape)
    cov = ""
    if not signal._lazy:
        import numpy as np

        cov = f", {100 * float(np.isfinite(signal.data).mean()):.2f}% sampled"
    return f"{type(signal).__name__.replace('Lazy', '')} {shape}{cov}"


# --------------------------------------------------------------------------- subcommands


def _simulate(a):
    import numpy as np

    from .conversion import to_partial_scan
    from .paths import validate_coverage
    from .simulate import NoiseModel

    _check_format(_output_paths(a.output, 1)[0])

    coverage = validate_coverage(a.coverage)
    noise = NoiseModel(dose=a.dose) if a.dose is not None else None
    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    _check_outputs(a.input, outputs, a.overwrite)
    show = not a.no_progressbar
    for i, (s, out) in enumerate(zip(images, outputs, strict=True)):
        seed = a.seed + i if a.seed is not None else None
        ps = to_partial_scan(s, a.path, coverage, seed=seed, noise=noise, vary_per_frame=a.vary_per_frame,
                             navigation_chunks=a.navigation_chunks, show_progressbar=show)
        _save(ps, out, show)
        md = ps.metadata.Signal.Partial_scan
        shape = "x".join(str(n) for n in ps.data.shape)
        measured = md.get_item("coverage_measured", md.coverage_path)
        covered = f"{100 * float(np.mean(measured)):.2f}% {'of each frame ' if np.ndim(measured) == 0 else ''}sampled"
        print(f"wrote {out}: {type(ps).__name__.replace('Lazy', '')} {shape}, {a.path} path, {covered}"
              f"{' (mean over frames)' if np.ndim(measured) else ''}, seed {md.seed}")


def _complete(a):
    from .completion import complete_partial_scan
    from .conversion import as_partial_scan
    from .models import list_models

    _check_format(_output_paths(a.output, 1)[0])

    if a.method == "generator" and a.model is None and not list_models("completion"):
        raise CLIError(
            "no completion model is installed with this package yet, so --method generator (the default) "
            "cannot run; use a classical method, e.g. --method linear, or give a trained model with --model PATH"
        )
    if a.model is not None and a.method != "generator":
        raise CLIError(f"--model is only used by --method generator, not {a.method!r}")
    if a.uncertainty is not None:
        if a.method != "generator":
            raise CLIError(f"--uncertainty needs --method generator (the trained network); {a.method!r} has no "
                           "calibrated error estimate")
        _check_format(_output_paths(a.uncertainty, 1)[0])
    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    sigmas = _output_paths(a.uncertainty, len(images)) if a.uncertainty is not None else [None] * len(images)
    if a.uncertainty is not None and any(same_file(o, g) or Path(o) == Path(g) for o, g in zip(outputs, sigmas)):
        raise CLIError("--uncertainty must name another file than the completion's output")
    _check_outputs(a.input, outputs + [g for g in sigmas if g is not None], a.overwrite)
    show = not a.no_progressbar
    for s, out, sigma_out in zip(images, outputs, sigmas, strict=True):
        if a.unscanned_value is not None:
            s = as_partial_scan(s, unscanned_value=a.unscanned_value)
        elif not s._lazy:
            import numpy as np

            if np.issubdtype(s.data.dtype, np.number) and np.isfinite(s.data).all():
                print(f"note: {a.input} has no unsampled (NaN) pixel, so there is nothing to complete; if its "
                      "unscanned positions hold zeros, add --unscanned-value 0", file=sys.stderr)
        done = complete_partial_scan(s, a.method, model=a.model, navigation_chunks=a.navigation_chunks,
                                     network_batch_size=a.network_batch_size, device=a.device,
                                     keep_measured=a.keep_measured, show_progressbar=show,
                                     uncertainty=sigma_out is not None, uncertainty_model=a.uncertainty_model)
        done, sigma = done if sigma_out is not None else (done, None)
        _save(done, out, show)
        print(f"wrote {out}: {_describe(done)} ({a.method})")
        if sigma is not None:
            _save(sigma, sigma_out, show)
            print(f"wrote {sigma_out}: {_describe(sigma)} (per-pixel uncertainty, sigma in data units)")


def _adaptive(a):
    from .adaptive import adaptive_scan
    from .simulate import NoiseModel

    _check_format(_output_paths(a.output, 1)[0])
    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    _check_outputs(a.input, outputs, a.overwrite)
    noise = NoiseModel(dose=a.dose) if a.dose is not None else None
    show = not a.no_progressbar
    for s, out in zip(images, outputs, strict=True):
        p = adaptive_scan(s, coverage=a.coverage, planner=a.planner, initial_path=a.initial_path,
                          initial_fraction=a.initial_fraction, steps=a.steps, noise=noise, seed=a.seed,
                          device=a.device, navigation_chunks=a.navigation_chunks or 1, show_progressbar=show)
        _save(p, out, show)
        print(f"wrote {out}: {_adaptive_summary(p, a.planner)}")


def _adaptive_summary(p, planner):
    """One line on an adaptive scan: coverage, steps, flybacks and how it ended (per frame, for a stack)."""
    import numpy as np

    md = p.metadata.Signal.Partial_scan
    if md.has_item("positions"):
        return (f"{planner} adaptive scan, {100 * float(md.coverage_measured):.2f}% sampled in "
                f"{len(md.positions_per_step)} steps, {md.flybacks} flybacks, {md.stopped}")
    frames = f"{planner} adaptive scans of {int(np.prod(p.axes_manager.navigation_shape))} frames " \
             f"({'x'.join(str(n) for n in p.data.shape)})"
    if isinstance(md.flybacks, str):  # lazy: scanned while written
        return f"{frames}, scanned while writing"
    return (f"{frames}, {100 * float(np.mean(md.coverage_measured)):.2f}% sampled (mean over frames), "
            f"{float(np.mean(md.flybacks)):.1f} flybacks per frame, {md.stopped}")


def _demo(a):
    from .demo import run_demo

    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    kwargs = {"size": a.size} if a.size is not None else {}
    run_demo(a.output_dir, coverage=a.coverage, methods=methods, show_progressbar=not a.no_progressbar, **kwargs)


def _training_data(a):
    """Training frames, validation frames and the data description of a training command."""
    from .training.frames import training_frames

    frames = training_frames(a.sources, max_frames_per_file=a.max_frames_per_file, synthetic=a.synthetic, seed=a.seed,
                             lattices=a.lattices, lattice_spacing=tuple(a.lattice_spacing))
    if not frames:
        raise CLIError("no training frames (give sources and/or --synthetic N)")
    val = training_frames(a.val, max_frames_per_file=1) if a.val else None
    desc = {"sources": a.sources, "frames": len(frames), "synthetic": a.synthetic,
            "max_frames_per_file": a.max_frames_per_file, "val": a.val}
    if a.lattices:
        desc.update(lattices=a.lattices, lattice_spacing=list(a.lattice_spacing))
    return frames, val, desc


@contextlib.contextmanager
def _run_folder(a):
    """:func:`hyperspy_partialscan.training.run_folder` for a training command, its refusals as one-line errors."""
    from .training.loop import check_run_folder, run_folder

    try:
        check_run_folder(a.out, a.name, resume=a.resume, overwrite=a.overwrite)
    except (ValueError, OSError) as err:
        message = str(err).replace("resume=True, --resume", "--resume").replace("overwrite=True, --overwrite",
                                                                                "--overwrite")
        raise CLIError(message.replace("resume and overwrite", "--resume and --overwrite")) from None
    with run_folder(a.out, a.name, resume=a.resume, overwrite=a.overwrite):
        yield


def _train(a):
    from .training import TrainConfig, train_completion

    with _run_folder(a):
        frames, val, desc = _training_data(a)
        # --inner-blocks sizes a fresh generator, or deepens the one given by --init
        blocks = {} if a.inner_blocks is None else {"grow_inner_blocks" if a.init else "inner_blocks": a.inner_blocks}
        cfg = TrainConfig(iterations=a.iterations, batch_size=a.batch_size, crop=a.crop, lr=a.lr, width=a.width,
                          target=a.target, threads=a.threads, seed=a.seed, adversarial=a.adversarial,
                          adaptive_fraction=a.adaptive_fraction, bf16=a.bf16, attention_heads=a.attention_heads,
                          **blocks)
        path = train_completion(frames, a.out, cfg, val_frames=val, init=a.init, resume=a.resume, name=a.name,
                                data_description=desc, show_progressbar=not a.no_progressbar,
                                max_seconds=a.max_minutes * 60 if a.max_minutes else None)
    print(f"model written to {path}")


def _denoise(a):
    from .denoising import denoise

    _check_format(_output_paths(a.output, 1)[0])

    images = load_images(a.input, lazy=a.lazy)
    outputs = _output_paths(a.output, len(images))
    _check_outputs(a.input, outputs, a.overwrite)
    show = not a.no_progressbar
    for s, out in zip(images, outputs, strict=True):
        _refuse_partial_scan(a.input, s)
        done = denoise(s, a.method, model=a.model, navigation_chunks=a.navigation_chunks,
                       network_batch_size=a.network_batch_size, device=a.device, sigma=a.sigma,
                       noise_estimate=a.noise_estimate, show_progressbar=show)
        _save(done, out, show)
        print(f"wrote {out}: {_describe(done)} ({a.method})")


def _refuse_partial_scan(inp, s):
    """A partial scan (NaN = unsampled) must be completed before denoising: say how, on the command line."""
    import numpy as np

    partial = s.metadata.has_item("Signal.Partial_scan") and not s.metadata.has_item("Signal.Partial_scan.Completion")
    if partial or (not s._lazy and np.issubdtype(s.data.dtype, np.floating) and not np.isfinite(s.data).all()):
        raise CLIError(f"{inp} is a partial scan (NaN = unsampled pixels): complete it first, e.g. "
                       f"`hyperspy-partialscan complete {inp} completed.hspy`, then denoise completed.hspy")


def _model_outputs(output):
    """The weights and JSON paths a model output ``NAME[.safetensors|.json]`` stands for."""
    w = Path(output)
    w = w.with_suffix(".safetensors") if w.suffix in (".safetensors", ".json") else w.with_name(w.name + ".safetensors")
    return [w, w.with_suffix(".json")]


def _fit_denoiser(a):
    from .denoising import fit_denoiser

    targets = _model_outputs(a.output)
    for t in targets:
        if same_file(t, a.input):
            raise CLIError(f"the model output {str(t)!r} is the input file; choose another output name")
    existing = [str(t) for t in targets if os.path.lexists(t)]
    if existing and not a.overwrite:
        raise CLIError(f"model output {' and '.join(existing)} exists; add --overwrite to replace it")
    images = load_images(a.input, lazy=False)
    if len(images) != 1:
        names = ", ".join(_signal_label(i, s) for i, s in enumerate(images))
        raise CLIError(f"{a.input} holds {len(images)} images ({names}); fit-denoiser needs exactly one: save the one "
                       "you want on its own first, e.g. `hs.load(IN)[0].save('one.hspy')` in HyperSpy")
    init = None if a.init == "none" else a.init
    model = fit_denoiser(images[0], init=init, epochs=a.epochs, method=a.method, sigma=a.sigma,
                         keep_best=not a.keep_last, output=targets[0], seed=a.seed,
                         show_progressbar=not a.no_progressbar)
    tr = model.config["training"]
    for risk in ("sure", "pure"):
        if f"{risk}_best" in tr:
            print(f"estimated error ({risk.upper()}): {tr[f'{risk}_start']:.3g} before, {tr[f'{risk}_best']:.3g} "
                  f"kept (epoch {tr['best_epoch']} of {a.epochs})")
    print(f"model written to {model.path} (use: hyperspy-partialscan denoise IN OUT --model {model.path}"
          + (f" --sigma {a.sigma:g}" if a.sigma is not None else "") + ")")


def _train_denoiser(a):
    from .training import train_denoiser

    with _run_folder(a):
        frames, val, desc = _training_data(a)
        path = train_denoiser(frames, a.out, iterations=a.iterations, batch_size=a.batch_size, crop=a.crop,
                              width=a.width, lr=a.lr, seed=a.seed, threads=a.threads, val_frames=val,
                              resume=a.resume, max_seconds=a.max_minutes * 60 if a.max_minutes else None,
                              name=a.name, data_description=desc, show_progressbar=not a.no_progressbar,
                              init=a.init, invert=a.invert, dose_range=tuple(a.dose_range), context=a.context,
                              bin_fraction=a.bin_fraction, bf16=a.bf16,
                              attention_heads=a.attention_heads, bottleneck_blocks=a.bottleneck_blocks,
                              wiener=a.wiener)
    print(f"model written to {path}")


# --------------------------------------------------------------------------- logging


class _OneLineFormatter(logging.Formatter):
    """``LEVEL name: message`` on one line (continuation lines folded in); tracebacks only when verbose."""

    def __init__(self, verbose):
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.verbose = verbose

    def format(self, record):
        text = " ".join(logging.Formatter.format(self, _plain(record)).split())
        if self.verbose and record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _plain(record):
    copy = logging.makeLogRecord(record.__dict__)
    copy.exc_info, copy.exc_text, copy.stack_info = None, None, None
    return copy


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (so that redirections made after set-up are honoured)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_LIBRARIES = ("hyperspy", "rsciio")


def _drop_redundant(record):
    """HyperSpy and RosettaSciIO log an ERROR before re-raising a reader's exception, which the CLI reports."""
    return not (record.levelno >= logging.ERROR and record.name.split(".")[0] in _LIBRARIES)


@contextlib.contextmanager
def _logging(verbose):
    """One handler for the run: the package's, HyperSpy's and RosettaSciIO's messages, each once, on stderr.

    Both libraries install their own coloured handler on stdout; for the run
    they propagate to this one instead. Their ERROR records are dropped unless
    ``verbose`` (each precedes an exception that ends as the CLI's ``error:`` line).
    """
    import hyperspy.api  # noqa: F401  (its import installs HyperSpy's own stdout handler: replace it now)

    root = logging.getLogger()
    libs = [logging.getLogger(name) for name in _LIBRARIES]
    saved = (root.level, list(root.handlers), [(lg.level, list(lg.handlers), lg.propagate) for lg in libs])
    handler = _StderrHandler()
    handler.setFormatter(_OneLineFormatter(verbose))
    if not verbose:
        handler.addFilter(_drop_redundant)
    root.handlers = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for lg in libs:
        lg.handlers, lg.propagate = [], True
        lg.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers = saved[1]
        for lg, (level, handlers, propagate) in zip(libs, saved[2], strict=True):
            lg.setLevel(level)
            lg.handlers, lg.propagate = handlers, propagate


_HANDLERS = {"simulate": _simulate, "complete": _complete, "adaptive": _adaptive, "demo": _demo, "train": _train,
             "denoise": _denoise, "fit-denoiser": _fit_denoiser, "train-denoiser": _train_denoiser}


def _message(err, verbose):
    """The one-line text of an error reaching :func:`main`."""
    if isinstance(err, (CLIError, ValueError, OSError, TypeError)) and str(err):
        msg = str(err)
    elif isinstance(err, MemoryError):
        msg = "out of memory (MemoryError); try --lazy or a smaller --navigation-chunks"
    else:
        msg = f"{type(err).__name__}: {err}"
        if not verbose:
            msg += " (run `hyperspy-partialscan -v ...` for the traceback)"
    return " ".join(msg.split())


def main(argv=None):
    """Run the command line (``hyperspy-partialscan --help``); returns the exit status.

    Errors are printed as one ``error: ...`` line on stderr with status 2
    (usage errors too, through argparse, which exits); Ctrl-C returns 130.
    """
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with _logging(a.verbose):
            _HANDLERS[a.command](a)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # report, don't dump a traceback on the user
        if a.verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {_message(err, a.verbose)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
