"""The ``hyperspy-partialscan`` command line's options: the parser and up-front checks of every number.

Usage errors are one line (``error: ...`` and where to look) with exit status 2.
"""

from __future__ import annotations

import argparse
import math

from .adaptive import ADAPTIVE_PLANNERS
from .completion import COMPLETION_METHODS
from .denoising import DENOISING_METHODS, FIT_METHODS
from .paths import path_names

__all__ = ["CLIError", "parse_args"]


class CLIError(Exception):
    """An error reported to the user as ``error: <message>`` with exit status 2."""


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
    p.add_argument("--lattices", type=int, default=0,
                   help="add this many generated atomic lattices with constants in --lattice-spacing")
    p.add_argument("--lattice-spacing", type=float, nargs=2, default=(20.0, 35.0), metavar=("LOW", "HIGH"),
                   help="range of the --lattices' lattice constants in pixels (default 20 35)")
    p.add_argument("--max-frames-per-file", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds an earlier run (its files are replaced)")
    p.add_argument("--no-progressbar", action="store_true")
    p.add_argument("--bf16", action="store_true",
                   help="mixed precision: convolutions in bfloat16 (about 1.6x faster per iteration on CPUs with "
                        "AVX-512 BF16 or AMX, slower elsewhere)")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``error: ...`` and where to look) with exit status 2, not the whole usage."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def parse_args(argv):
    """Parse and validate the command line (see :func:`_validate`)."""
    parser = _build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand whose --help lists the options
        parser.exit(2, f"error: unrecognized arguments: {' '.join(extra)} "
                       f"(see `{parser.prog} {a.command} --help`)\n")
    _validate(a)
    return a


def _build_parser():
    parser = _Parser(
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
    p.add_argument("--dose", type=float, default=None,
                   help="electrons per probe position at full scale (Poisson noise)")
    p.add_argument("--vary-per-frame", action="store_true", help="a different path for every frame of a stack")
    p.add_argument("--lazy", action="store_true", help="load and process lazily (dask), for data larger than memory")
    p.add_argument("--navigation-chunks", type=int, default=None,
                   help="frames per dask block, the unit of work (default: automatic)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")
    _add_complete(sub)
    _add_adaptive(sub)
    _add_demo_and_train(sub)
    _add_denoise(sub)
    return parser


def _add_adaptive(sub):
    p = sub.add_parser("adaptive", help="scan adaptively (simulated microscope): the data decide where to scan next",
                       description="Scan the 2-D image(s) of any RosettaSciIO-readable file adaptively with a "
                       "simulated microscope: an initial static path, then steps planned from the completion's "
                       "uncertainty. Every frame of a stack gets its own scan. Files with several images give "
                       "OUTPUT_0, OUTPUT_1, ...")
    p.add_argument("input", help="any RosettaSciIO-readable file holding full frames")
    p.add_argument("output", help="output file; the extension picks the format (.hspy, .zspy, ...)")
    p.add_argument("--coverage", type=float, default=0.05, help="total fraction of pixels to scan (default 0.05)")
    p.add_argument("--steps", type=int, default=8, help="adaptive steps after the initial path (default 8)")
    p.add_argument("--planner", default="curvature", choices=ADAPTIVE_PLANNERS, help="default: curvature")
    p.add_argument("--initial-path", default="spiral", choices=path_names(), help="default: spiral")
    p.add_argument("--initial-fraction", type=float, default=0.25, help="budget of the initial path (default 0.25)")
    p.add_argument("--dose", type=float, default=None, help="electrons per probe position at full scale")
    p.add_argument("--seed", type=int, default=0, help="seed of the path, the planner and the noise (default 0)")
    p.add_argument("--device", default=None, help="torch device of the planner's networks")
    p.add_argument("--lazy", action="store_true",
                   help="load and process lazily (dask): the frames of a stack are scanned while the output is written")
    p.add_argument("--navigation-chunks", type=int, default=None,
                   help="frames of a stack per dask block (default 1: every frame's scan is a unit of work)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")


def _add_complete(sub):
    p = sub.add_parser("complete", help="complete partial scans (fill the unsampled pixels)",
                       description="Complete the partial scans (NaN = unsampled) in any RosettaSciIO-readable file. "
                       "Acquisitions that store unscanned positions as zeros need --unscanned-value 0.")
    p.add_argument("input", help="a partial scan in any RosettaSciIO-readable file")
    p.add_argument("output", help="output file; the extension picks the format (.hspy, .zspy, ...)")
    p.add_argument("--method", default="generator", choices=COMPLETION_METHODS,
                   help="completion method (default: generator, the trained network)")
    p.add_argument("--model", default=None,
                   help="model name or path for --method generator (default: the shipped model)")
    p.add_argument("--unscanned-value", type=float, default=None,
                   help="treat pixels equal to this value as unsampled (e.g. 0 for zero-filled acquisitions)")
    p.add_argument("--uncertainty", default=None, metavar="SIGMA_OUT",
                   help="also write the completion's per-pixel uncertainty (predicted standard deviation of its "
                   "error against the blurred truth, data units) to this file (--method generator; with --lazy "
                   "the frames are completed once per output)")
    p.add_argument("--uncertainty-model", default=None, help="uncertainty model name or path (default: shipped)")
    p.add_argument("--keep-measured", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the measured samples unchanged in the completion (default); --no-keep-measured "
                   "returns the method's own values there")
    p.add_argument("--lazy", action="store_true", help="load and process lazily (dask), for data larger than memory")
    p.add_argument("--navigation-chunks", type=int, default=None,
                   help="frames per dask block, the unit of work (default: automatic)")
    p.add_argument("--network-batch-size", type=int, default=None,
                   help="frames or tiles per network call (default: 2-4 on the CPU, 16 on a GPU)")
    p.add_argument("--device", default=None, help="torch device for the generator (default: CUDA, MPS, then CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")


def _add_demo_and_train(sub):
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
    p.add_argument("--adaptive-fraction", type=float, default=0.0,
                   help="fraction of training crops scanned with adaptive-style paths (default 0)")
    p.add_argument("--inner-blocks", type=int, default=None,
                   help="residual blocks of the inner generator at 1/8 resolution (default 6); with --init, the "
                        "model is deepened to this many, the new blocks starting as the identity")
    p.add_argument("--attention-heads", type=int, default=0,
                   help="a non-local (self-attention) block of this many heads after the inner blocks, in a fresh "
                        "generator or added to the --init model, starting as the identity (default 0: none)")


def _add_denoise(sub):
    p = sub.add_parser("denoise", help="denoise images (trained network or classical filters)",
                       description="Denoise the 2-D images in any RosettaSciIO-readable file. Partial scans must be "
                       "completed first (hyperspy-partialscan complete).")
    p.add_argument("input", help="any RosettaSciIO-readable file")
    p.add_argument("output", help="output file; the extension picks the format")
    p.add_argument("--method", default="generator", choices=DENOISING_METHODS,
                   help="denoising method (default: generator, the trained network)")
    p.add_argument("--model", default=None, help="denoising model name or path (default: the shipped model)")
    p.add_argument("--sigma", type=float, default=None, help="known noise standard deviation in data units")
    p.add_argument("--noise-estimate", choices=["frame", "stack"], default="frame",
                   help="blind noise level per frame, or one for the whole stack (default frame)")
    p.add_argument("--lazy", action="store_true", help="load and process lazily (dask)")
    p.add_argument("--navigation-chunks", type=int, default=None,
                   help="frames per dask block, the unit of work (default: automatic)")
    p.add_argument("--network-batch-size", type=int, default=None,
                   help="frames or tiles per network call (default: 2-4 on the CPU, 16 on a GPU)")
    p.add_argument("--device", default=None, help="torch device (default: CUDA, MPS, then CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")

    p = sub.add_parser("fit-denoiser", help="fine-tune the denoiser on your own noisy data (no clean images needed)")
    p.add_argument("input", help="noisy image(s) in any RosettaSciIO-readable file")
    p.add_argument("output", help="model path to write (NAME.safetensors + NAME.json)")
    p.add_argument("--method", default="blind_spot", choices=FIT_METHODS,
                   help="blind_spot or sure (any data), pure (shot noise: unbiased at a few counts per pixel; "
                        "uses the Poisson variance model, known or estimated), noise2noise (repeated exposures "
                        "of one field)")
    p.add_argument("--init", default="default", help="model to start from ('default', a name or path, or 'none')")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--sigma", type=float, default=None,
                   help="known noise standard deviation in data units (default: the metadata's Poisson model, "
                        "else estimated)")
    p.add_argument("--keep-last", action="store_true",
                   help="keep the last epoch's weights (default: those with the lowest error estimate, PURE "
                        "for --method pure and SURE otherwise, the starting weights included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the model files if they exist")
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
    p.add_argument("--bin-fraction", type=float, default=0.0,
                   help="fraction of crops drawn from the images averaged over 2x2 pixel blocks, whose own noise "
                        "is halved (default 0)")
    p.add_argument("--attention-heads", type=int, default=0,
                   help="a non-local (self-attention) block of this many heads at the U-Net's coarsest scale, in a "
                        "fresh network or added to the --init model, starting as the identity (default 0: none)")
    p.add_argument("--bottleneck-blocks", type=int, default=0,
                   help="residual blocks at the U-Net's coarsest scale, in a fresh network or the --init model "
                        "deepened to this many, new ones starting as the identity (default 0: none)")
    p.add_argument("--wiener", type=int, nargs=2, default=None, metavar=("WINDOW", "HOP"),
                   help="a sliding-window Wiener estimate of the frame (tiles of WINDOW px every HOP px) as an extra "
                        "input channel, in a fresh network or added to the --init model with zero weights "
                        "(e.g. 48 16; default: none)")


# --------------------------------------------------------------------------- checks of the numbers


#: option -> (kind, low, high, low inclusive): "int" or "float"; None = unbounded. Floats must be finite.
_RANGES = {
    "coverage": ("float", 0, 1, False),
    "dose": ("float", 0, None, False),
    "seed": ("int", 0, None, True),
    "batch_size": ("int", 1, None, True),
    "navigation_chunks": ("int", 1, None, True),
    "network_batch_size": ("int", 1, None, True),
    "unscanned_value": ("float", None, None, True),
    "size": ("int", 16, None, True),
    "sigma": ("float", 0, None, False),
    "steps": ("int", 0, None, True),
    "initial_fraction": ("float", 0, 1, False),
    "epochs": ("int", 1, None, True),
    "iterations": ("int", 1, None, True),
    "max_minutes": ("float", 0, None, False),
    "crop": ("int", 16, None, True),
    "lr": ("float", 0, None, False),
    "width": ("int", 1, None, True),
    "synthetic": ("int", 0, None, True),
    "lattices": ("int", 0, None, True),
    "max_frames_per_file": ("int", 1, None, True),
    "threads": ("int", 1, None, True),
    "invert": ("float", 0, 1, True),
    "context": ("int", 1, None, True),
    "bin_fraction": ("float", 0, 1, True),
    "attention_heads": ("int", 0, None, True),
    "adaptive_fraction": ("float", 0, 1, True),
    "inner_blocks": ("int", 1, None, True),
    "bottleneck_blocks": ("int", 0, None, True),
}


def _range_text(kind, lo, hi, lo_incl):
    """``a positive number``, ``an integer >= 1``, ``a number in [0, 1]``, ..."""
    noun = "an integer" if kind == "int" else "a number"
    if lo is None and hi is None:
        return "a finite number"
    if hi is not None:
        return f"{noun} in {'[' if lo_incl else '('}{lo:g}, {hi:g}]"
    if lo == 0 and not lo_incl:
        return "a positive integer" if kind == "int" else "a positive number"
    return f"{noun} >= {lo:g}" if lo_incl else f"{noun} > {lo:g}"


def _check_number(option, value, kind, lo, hi, lo_incl):
    """Raise CLIError ``--option must be ..., got value`` unless ``value`` is in range."""
    ok = isinstance(value, int) or math.isfinite(value)
    if ok and lo is not None:
        ok = value >= lo if lo_incl else value > lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        raise CLIError(f"{option} must be {_range_text(kind, lo, hi, lo_incl)}, got {value:g}"
                       if isinstance(value, float) else
                       f"{option} must be {_range_text(kind, lo, hi, lo_incl)}, got {value}")


def _validate(a):
    """Check every numeric option up front: one line naming the option and its valid range."""
    for dest, (kind, lo, hi, lo_incl) in _RANGES.items():
        value = getattr(a, dest, None)
        if value is not None:
            _check_number("--" + dest.replace("_", "-"), value, kind, lo, hi, lo_incl)
    for dest in ("dose_range", "lattice_spacing"):  # LOW HIGH pairs of positive numbers
        if getattr(a, dest, None) is not None:
            option, (low, high) = "--" + dest.replace("_", "-"), getattr(a, dest)
            for v in (low, high):
                _check_number(option, v, "float", 0, None, False)
            if low > high:
                raise CLIError(f"{option} must be LOW <= HIGH, got {low:g} {high:g}")
    if getattr(a, "wiener", None) is not None:
        window, hop = a.wiener
        if hop < 1 or window < 2 * hop or window % hop:
            raise CLIError(f"--wiener must be WINDOW HOP with HOP >= 1 and WINDOW a multiple of HOP of at least "
                           f"2 HOP, got {window} {hop}")
    name = getattr(a, "name", None)
    if name is not None and (not name or name in (".", "..") or any(c in name for c in "/\\")):
        raise CLIError(f"--name must be a plain file name (no folder), got {name!r}")


