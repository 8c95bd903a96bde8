"""The ``hyperspy-partialscan`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main", "training_frames"]


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
            frames.append(atomic_lattice((size, size), spacing=float(rng.uniform(6, 20)), seed=int(rng.integers(2**31))))
    return frames


def _add_common_processing(p):
    p.add_argument("--batch-size", type=int, default=None, help="frames per batch (default: automatic)")
    p.add_argument("--device", default=None, help="torch device for network methods (default: CUDA, MPS, then CPU)")
    p.add_argument("--no-progressbar", action="store_true", help="hide the progress bar")


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="hyperspy-partialscan",
        description="Simulate, complete and denoise partial S/TEM scans (HyperSpy extension).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="turn full images into simulated partial scans")
    p.add_argument("input", help="any RosettaSciIO-readable file")
    p.add_argument("output", help="output file (.hspy, .zspy, ...)")
    p.add_argument("--path", default="spiral", help="scan path name (default: spiral)")
    p.add_argument("--coverage", type=float, default=0.05, help="fraction of sampled pixels (default 0.05)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dose", type=float, default=None, help="electrons per probe position at full scale (Poisson noise)")
    p.add_argument("--vary-per-frame", action="store_true", help="a different path for every frame of a stack")
    p.add_argument("--lazy", action="store_true", help="load and process lazily")

    p = sub.add_parser("complete", help="complete partial scans")
    p.add_argument("input", help="a partial scan (NaN = unsampled) in any RosettaSciIO-readable file")
    p.add_argument("output", help="output file")
    p.add_argument("--method", default="generator", help="generator, nearest, linear, cubic or biharmonic")
    p.add_argument("--model", default=None, help="model name or path (generator method)")
    p.add_argument("--unscanned-value", type=float, default=None,
                   help="treat pixels equal to this value as unsampled (e.g. 0 for zero-filled acquisitions)")
    p.add_argument("--keep-measured", action="store_true", help="put the measured samples back into the completion")
    p.add_argument("--lazy", action="store_true", help="load and process lazily")
    _add_common_processing(p)

    p = sub.add_parser("demo", help="the main job on built-in data: simulate, complete, compare")
    p.add_argument("--output-dir", default="partialscan_demo", help="folder for the figure and table")
    p.add_argument("--coverage", type=float, default=0.05)
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all available)")
    p.add_argument("--no-progressbar", action="store_true")

    p = sub.add_parser("train", help="train or fine-tune a completion generator")
    p.add_argument("sources", nargs="*", help="files, folders or globs of training images")
    p.add_argument("--out", required=True, help="run folder (checkpoints, validation curve, model)")
    p.add_argument("--val", nargs="*", default=None, help="files, folders or globs for the validation curve")
    p.add_argument("--name", default="completion_model", help="name of the exported model")
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget; the LR schedule follows it")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--target", choices=["blurred", "raw"], default="blurred")
    p.add_argument("--synthetic", type=int, default=0, help="add this many generated specimens")
    p.add_argument("--max-frames-per-file", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="fine-tune from this model (name or path)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--adversarial", action="store_true", help="add the multi-scale adversarial stage")
    p.add_argument("--no-progressbar", action="store_true")
    return parser.parse_args(argv)


def _train(a):
    from .training import TrainConfig, train_completion

    frames = training_frames(a.sources, max_frames_per_file=a.max_frames_per_file, synthetic=a.synthetic, seed=a.seed)
    if not frames:
        raise SystemExit("error: no training frames (give sources and/or --synthetic N)")
    val = training_frames(a.val, max_frames_per_file=1) if a.val else None
    cfg = TrainConfig(iterations=a.iterations, batch_size=a.batch_size, crop=a.crop, lr=a.lr, width=a.width,
                      target=a.target, threads=a.threads, seed=a.seed, adversarial=a.adversarial)
    desc = {"sources": a.sources, "frames": len(frames), "synthetic": a.synthetic,
            "max_frames_per_file": a.max_frames_per_file, "val": a.val}
    path = train_completion(frames, a.out, cfg, val_frames=val, init=a.init, resume=a.resume, name=a.name,
                            data_description=desc, show_progressbar=not a.no_progressbar,
                            max_seconds=a.max_minutes * 60 if a.max_minutes else None)
    print(f"model written to {path}")


def main(argv=None):
    """Run the command line (``hyperspy-partialscan --help``)."""
    a = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"train": _train}
    try:
        from . import cli_commands  # noqa: F401  (simulate / complete / demo)

        handlers.update(cli_commands.HANDLERS)
    except ImportError:
        pass
    try:
        handlers[a.command](a)
    except (ValueError, OSError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
