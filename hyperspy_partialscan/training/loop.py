"""The training loop shared by every network of the package.

Adam with warm-up and cosine decay, adaptive learning-rate clipping (ALRC),
gradient-norm clipping, checkpoints with resume, a validation log, and a stop
with a clear error when the loss or the weights stop being finite.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch

from .._atomic import atomic_path, temporary_name
from .._validation import check_number
from .._version import __version__
from ..models import ARCHITECTURE_TASKS, Model, load_model, save_model
from ..models.networks import NETWORKS

__all__ = ["ALRC", "learning_rate", "fit_network", "prepare_run", "run_folder", "TrainingDiverged", "start_from",
           "last_validation", "resumed_state", "initial_network", "export_run", "export_checkpoint"]

_log = logging.getLogger(__name__)


class ALRC:
    """Adaptive learning-rate clipping (Ede & Beanland 2020).

    Keeps running estimates of the loss's first two moments; a loss above
    ``mean + n_sigma * std`` is scaled down to that bound (its gradient shrinks
    by the same factor) so rare, very large losses don't destabilise training.
    """

    def __init__(self, n_sigma=3.0, decay=0.999, mu=None, mu2=None):
        self.n_sigma, self.decay = n_sigma, decay
        self.mu, self.mu2 = mu, mu2

    def __call__(self, loss):
        value = float(loss.detach())
        if self.mu is None:
            self.mu, self.mu2 = value, value * value * 1.5  # generous initial spread
            return loss
        sigma = math.sqrt(max(self.mu2 - self.mu**2, 1e-20))
        bound = self.mu + self.n_sigma * sigma
        if value > bound > 0:  # (a risk estimate such as SURE can be negative: never flip its sign)
            loss = loss * (bound / value)
        self.mu = self.decay * self.mu + (1 - self.decay) * min(value, bound)
        self.mu2 = self.decay * self.mu2 + (1 - self.decay) * min(value, bound) ** 2
        return loss

    def state_dict(self):
        return {"mu": self.mu, "mu2": self.mu2}


def learning_rate(it, *, iterations, lr, lr_min, warmup, time_fraction=0.0):
    """Warm-up then cosine decay over the run's progress.

    Progress is the larger of the iteration fraction and ``time_fraction`` (the
    fraction of a wall-time budget spent), so a time-budgeted run still ends
    with a decayed learning rate.

    Examples
    --------
    >>> from hyperspy_partialscan.training.loop import learning_rate
    >>> [round(learning_rate(i, iterations=100, lr=1.0, lr_min=0.0, warmup=10), 3) for i in (0, 9, 10, 100)]
    [0.1, 1.0, 1.0, 0.0]
    """
    if it < warmup:
        return lr * (it + 1) / warmup
    t = max((it - warmup) / max(iterations - warmup, 1), time_fraction)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(t, 1.0)))


def start_from(init, task, architecture):
    """The network to fine-tune from ``init`` (a Model, name or path; its architecture is kept) and the
    provenance entries recording it, or ``(None, {"init": None, "init_training": None})``."""
    if init is None:
        return None, {"init": None, "init_training": None}
    model = init if isinstance(init, Model) else load_model(init, task=task)
    net = architecture(**model.config["network"])
    net.load_state_dict(model.network.state_dict())
    # provenance chain: how the starting model itself was trained
    return net, {"init": {"name": model.name, "sha256": model.sha256}, "init_training": model.config.get("training")}


def last_validation(history, out):
    """The latest validation row of this run, else of the run folder's CSV."""
    rows = [h for h in history if any(k.startswith("val_") for k in h)]
    if rows:
        return rows[-1]
    path = Path(out) / "validation.csv" if out is not None else None
    if path is not None and path.exists():
        rows = list(csv.DictReader(open(path)))
        return rows[-1] if rows else None
    return None


def export_run(net, out_dir, name, *, history, start, started, training, extra=None):
    """Save the network a training run ends with as ``out_dir/NAME.safetensors`` (+ JSON), with its provenance.

    The task follows from the network's architecture. The record every trainer writes: the package
    version, ``extra`` (the task's own entries: inputs, generator, ...), ``training`` (the run's settings)
    with the iterations reached (the last of this run's ``history``, or ``start`` when a resumed run had
    nothing left to do) and the seconds since ``started``, and the latest validation row
    (:func:`last_validation`).

    Returns
    -------
    pathlib.Path
        The exported ``.safetensors``.
    """
    record = {"package_version": __version__, **(extra or {}),
              "training": {"iterations": history[-1]["iteration"] if history else start, **training,
                           "seconds_this_run": round(time.time() - started, 1)},
              "validation": last_validation(history, out_dir)}
    architecture = type(net).__name__
    return save_model(net, Path(out_dir) / f"{name}.safetensors", task=ARCHITECTURE_TASKS[architecture],
                      architecture=architecture, extra=record)


def export_checkpoint(checkpoint, path, *, architecture=None, extra=None):
    """Export a training checkpoint (``checkpoint.pt``) of any network as a loadable model, e.g. mid-run.

    The checkpoint is read with ``torch.load(weights_only=True)``. Its architecture is the one it records
    (checkpoints written before it was recorded need ``architecture``); the model's task follows from it.

    Parameters
    ----------
    checkpoint : str or pathlib.Path
    path : str or pathlib.Path
        The ``.safetensors`` to write (its ``.json`` beside it, atomically).
    architecture : str, optional
        ``"PartialScanGenerator"``, ``"DenoisingUNet"`` or ``"UncertaintyUNet"``.
    extra : dict, optional
        Added to the model's JSON.

    Returns
    -------
    pathlib.Path
    """
    state = torch.load(checkpoint, weights_only=True)
    architecture = architecture or state.get("architecture")
    if architecture not in NETWORKS:
        raise ValueError(f"architecture must be one of {', '.join(NETWORKS)} (the checkpoint {str(checkpoint)!r} "
                         f"records {state.get('architecture')!r}), got {architecture!r}")
    net = NETWORKS[architecture](**state["network_config"])
    net.load_state_dict(state["network"])
    info = {"package_version": __version__,
            "training": {"iterations": int(state["iteration"]), "checkpoint": str(checkpoint)}, **(extra or {})}
    return save_model(net, path, task=ARCHITECTURE_TASKS[architecture], architecture=architecture, extra=info)


def fit_network(
    net,
    next_batch,
    compute_loss,
    *,
    iterations,
    lr=1e-3,
    lr_min=2e-5,
    warmup=100,
    alrc_sigmas=3.0,
    out_dir=None,
    checkpoint_every=250,
    resume=False,
    max_seconds=None,
    evaluate=None,
    val_every=250,
    show_progressbar=True,
    desc="training",
    after_step=None,
    extra_state=None,
    plot=None,
    bf16=False,
):
    """The training loop shared by every network of the package.

    Adam with warm-up and cosine decay (over the iterations or the wall-time
    budget), adaptive learning-rate clipping, gradient-norm clipping,
    checkpoints with resume, and a validation CSV.

    Parameters
    ----------
    net : torch.nn.Module
        Must have a ``config`` dict (stored in checkpoints).
    next_batch : callable
        ``next_batch(iteration)`` returns a batch (any object).
    compute_loss : callable
        ``compute_loss(net, batch)`` returns the (N,) loss of each batch item,
        or a tuple ``(loss, per_item, *extras)`` where ``loss`` is the scalar to
        optimise; ``extras`` are passed to ``after_step``.
    iterations : int
    lr, lr_min, warmup, alrc_sigmas : float
        Optimiser schedule and ALRC threshold.
    out_dir : str or pathlib.Path, optional
        Where ``checkpoint.pt`` and ``validation.csv`` go (none if omitted).
    checkpoint_every : int
    resume : bool
        Continue from ``out_dir/checkpoint.pt``.
    max_seconds : float, optional
        Wall-time budget; the learning-rate schedule follows it.
    evaluate : callable, optional
        ``evaluate(net)`` returns a dict of validation figures (logged to CSV).
    val_every : int
    show_progressbar : bool
    desc : str
        Name in the progress bar and the log.
    after_step : callable, optional
        ``after_step(batch, per_item, *extras)`` after each optimiser step.
    extra_state : object, optional
        Has ``state_dict()``/``load_state_dict()``; saved in and restored from
        checkpoints (e.g. discriminators).
    plot : callable, optional
        ``plot(csv_path, png_path)`` after each validation.
    bf16 : bool
        Mixed precision: ``compute_loss`` runs under ``torch.autocast`` with
        bfloat16, so the convolutions run in bfloat16 while the weights, the
        optimiser and the losses (computed against float32 targets) stay in
        float32. On CPUs with AVX-512 BF16 or AMX the convolutions run about
        twice as fast (a generator training iteration 1.6x, docs/model.md);
        on CPUs without them, slower.

    Returns
    -------
    list of dict
        One row per iteration of this run (iteration, loss, running loss,
        step time and, where evaluated, validation figures).

    Raises
    ------
    TrainingDiverged
        The loss was non-finite for ``MAX_NON_FINITE_STEPS`` consecutive steps,
        or the weights became non-finite; the last checkpoint (always finite)
        is kept.
    FileExistsError
        ``out_dir`` holds a previous run and ``resume`` was not given (see
        :func:`run_folder` to start afresh there).
    """
    check_number("iterations", iterations, low=1, integer=True)
    check_number("lr", lr, low=0, low_inclusive=False)
    if max_seconds is not None:
        check_number("max_seconds", max_seconds, low=0, low_inclusive=False)
    schedule = {"iterations": iterations, "lr": lr, "lr_min": lr_min, "warmup": warmup}
    # channels-last weights: the convolutions (and their gradients) run ~1.4x faster on CPU (oneDNN)
    net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ckpt = prepare_run(out_dir, resume=resume)
    alrc, start = ALRC(alrc_sigmas), 0
    if resume:
        alrc, start = _restore(ckpt, net, opt, alrc_sigmas, extra_state, desc)
    history, running, t0, bad, saved = [], None, time.time(), 0, start
    device_type = next(net.parameters()).device.type
    bar = _progress_bar(show_progressbar, iterations, start, desc)
    for it in range(start, iterations):
        t_step = time.time()
        lr_now = learning_rate(it, **schedule, time_fraction=(time.time() - t0) / max_seconds if max_seconds else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr_now
        net.train()
        batch = next_batch(it)
        with torch.autocast(device_type, torch.bfloat16, enabled=bf16):
            res = compute_loss(net, batch)
        loss, per_item, extras = (res[0], res[1], res[2:]) if isinstance(res, tuple) else (res.mean(), res, ())
        if not bool(torch.isfinite(loss)):
            bad = _skip_non_finite(bad, it, lr_now, desc, ckpt)
            continue
        bad = 0
        _step(net, opt, alrc(loss), it, lr_now, desc, ckpt)
        if after_step is not None:
            after_step(batch, per_item, *extras)
        value = float(per_item.detach().mean())
        running = value if running is None else 0.98 * running + 0.02 * value
        row = {"iteration": it + 1, "loss": value, "running_loss": running, "step_seconds": time.time() - t_step}
        done = it + 1 == iterations or (max_seconds is not None and time.time() - t0 > max_seconds)
        if evaluate is not None and ((it + 1) % val_every == 0 or done):
            row.update(_validate(net, evaluate, ckpt, plot, t0, row, desc))
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.2e}", lr=f"{lr_now:.1e}")
        if (it + 1) % 50 == 0:
            _log.info("%s it %d loss %.3e lr %.2e %.1fs", desc, it + 1, running, lr_now, time.time() - t0)
        if ckpt is not None and ((it + 1) % checkpoint_every == 0 or done):
            _save_checkpoint(ckpt, net, opt, alrc, it + 1, extra_state)
            saved = it + 1
        if done:
            break
    if ckpt is not None and history and saved != history[-1]["iteration"]:  # the last steps were skipped
        _save_checkpoint(ckpt, net, opt, alrc, history[-1]["iteration"], extra_state)
    if bar is not None:
        bar.close()
    net.eval()
    return history


#: consecutive steps with a non-finite loss that are skipped before a run is stopped
MAX_NON_FINITE_STEPS = 3
#: files of a run folder that a new run would replace
RUN_FILES = ("checkpoint.pt", "validation.csv", "validation.png")


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss or the weights became non-finite."""


def prepare_run(out_dir, *, resume=False):
    """The checkpoint path of a run folder, refusing to mix a new run with a previous one.

    Parameters
    ----------
    out_dir : str or pathlib.Path or None
        Run folder (created if missing); None: no checkpoints.
    resume : bool
        Continue the run in ``out_dir``.

    Returns
    -------
    pathlib.Path or None
        ``out_dir/checkpoint.pt``.

    Raises
    ------
    FileNotFoundError
        ``resume`` without a checkpoint.
    FileExistsError
        A previous run's files without ``resume`` (to start afresh, use
        :func:`run_folder` with ``overwrite=True``, as the trainers do).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from hyperspy_partialscan.training.loop import prepare_run
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> prepare_run(run).name
    'checkpoint.pt'
    >>> _ = (run / "validation.csv").write_text("iteration\\n1\\n")
    >>> prepare_run(run)
    Traceback (most recent call last):
    ...
    FileExistsError: ...
    """
    if out_dir is None:
        if resume:
            raise FileNotFoundError("cannot resume: no run folder (out_dir) was given")
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"cannot resume: {ckpt} does not exist")
        return ckpt
    previous = [name for name in RUN_FILES if os.path.lexists(out / name)]
    if previous:
        raise FileExistsError(_occupied(out, previous))
    return ckpt


def _occupied(out, names):
    return (f"run folder {str(out)!r} already holds a run ({', '.join(names)}); resume it (resume=True, --resume) "
            "or start afresh (overwrite=True, --overwrite)")


def check_run_folder(out_dir, name=None, *, resume=False, overwrite=False):
    """The files of a run folder's earlier run, raising what :func:`run_folder` refuses; (run files, earlier ones)."""
    out = Path(out_dir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run, or start afresh")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{str(out)!r} is a file; give a run folder")
    names = [*RUN_FILES] + ([f"{name}.safetensors", f"{name}.json"] if name else [])
    earlier = [n for n in names if os.path.lexists(out / n)]
    if earlier and not (resume or overwrite):
        raise FileExistsError(_occupied(out, earlier))
    return names, earlier


@contextlib.contextmanager
def run_folder(out_dir, name=None, *, resume=False, overwrite=False):
    """Guard a training run folder: never mix or silently replace an earlier run.

    A folder holding an earlier run (checkpoint, validation log, the model
    ``name``) is refused unless ``resume`` (continue it) or ``overwrite`` (start
    afresh). With ``overwrite`` the earlier run's files are moved aside into a
    hidden folder, deleted once the block has finished, and put back if it
    fails: the folder never holds a mixed validation log, and a failed run
    loses nothing.

    Raises
    ------
    ValueError
        ``resume`` and ``overwrite`` together.
    NotADirectoryError
        ``out_dir`` is a file.
    FileExistsError
        An earlier run without ``resume`` or ``overwrite``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from hyperspy_partialscan.training.loop import run_folder
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (run / "validation.csv").write_text("old")
    >>> with run_folder(run, overwrite=True):
    ...     _ = (run / "validation.csv").write_text("new")
    >>> (run / "validation.csv").read_text(), sorted(p.name for p in run.iterdir())
    ('new', ['validation.csv'])
    """
    out = Path(out_dir)
    names, earlier = check_run_folder(out, name, resume=resume, overwrite=overwrite)
    if not earlier or resume:
        yield
        return
    aside = temporary_name(out / "previous-run", "old")
    aside.mkdir()
    for n in earlier:
        os.replace(out / n, aside / n)
    try:
        yield
    except BaseException:
        for n in names:  # the failed run's files go, the earlier run's come back
            if os.path.lexists(out / n):
                (out / n).unlink()
        for n in earlier:
            os.replace(aside / n, out / n)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def resumed_state(out_dir, resume):
    """The checkpoint of ``out_dir`` to resume from (read with ``weights_only=True``), or None."""
    ckpt = Path(out_dir) / "checkpoint.pt"
    if not resume or not ckpt.exists():
        return None
    return torch.load(ckpt, weights_only=True)


def initial_network(architecture, task, *, init=None, out_dir=None, resume=False, **fresh):
    """The network a training run starts from, its provenance record and its first iteration.

    A resumed run rebuilds the checkpoint's architecture (its weights are
    loaded by :func:`fit_network`); else ``init`` (a model to fine-tune) is
    copied; else a fresh ``architecture(**fresh)``.

    Returns
    -------
    (torch.nn.Module, dict, int)
    """
    net, record = start_from(init, task, architecture)
    state = resumed_state(out_dir, resume) if out_dir is not None else None
    if state is not None:
        return architecture(**state["network_config"]), record, int(state["iteration"])
    return (net if net is not None else architecture(**fresh)), record, 0


def _restore(ckpt, net, opt, alrc_sigmas, extra_state, desc):
    state = torch.load(ckpt, weights_only=True)
    net.load_state_dict(state["network"])
    opt.load_state_dict(state["optimizer"])
    if extra_state is not None:
        extra_state.load_state_dict(state)
    start = int(state["iteration"])
    _log.info("%s resumed from %s at iteration %d", desc, ckpt, start)
    return ALRC(alrc_sigmas, mu=state["alrc"]["mu"], mu2=state["alrc"]["mu2"]), start


def _progress_bar(show, iterations, start, desc):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=iterations, initial=start, desc=desc, unit="it")


def _diverged(what, it, lr_now, desc, ckpt):
    kept = f"the last checkpoint ({ckpt}) is finite and kept" if ckpt is not None and ckpt.exists() else (
        "no checkpoint was written")
    return TrainingDiverged(f"{desc} diverged: {what} at iteration {it + 1} (learning rate {lr_now:.3g}); {kept}. "
                            "Lower the learning rate or check the training data.")


def _skip_non_finite(bad, it, lr_now, desc, ckpt):
    bad += 1
    if bad >= MAX_NON_FINITE_STEPS:
        raise _diverged(f"the loss was non-finite for {bad} consecutive steps", it, lr_now, desc, ckpt)
    _log.warning("%s: non-finite loss at iteration %d skipped", desc, it + 1)
    return bad


def _step(net, opt, loss, it, lr_now, desc, ckpt):
    """One optimiser step; the weights must stay finite."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        raise _diverged("the weights became non-finite", it, lr_now, desc, ckpt)


def _validate(net, evaluate, ckpt, plot, t0, row, desc):
    """Evaluate, append the row to the run's validation log (and plot it)."""
    net.eval()
    figures = evaluate(net)
    figures["seconds"] = round(time.time() - t0, 1)
    if ckpt is not None:
        path = ckpt.parent / "validation.csv"
        new = not path.exists()
        full = {**row, **figures}
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(full))
            if new:
                w.writeheader()
            w.writerow(full)
        if plot is not None:
            plot(path, ckpt.parent / "validation.png")
    _log.info("%s validation %s", desc, {**row, **figures})
    return figures


def _save_checkpoint(ckpt, net, opt, alrc, iteration, extra_state):
    """Write the checkpoint atomically (a killed run keeps its previous, whole checkpoint)."""
    state = {"network": net.state_dict(), "network_config": net.config, "architecture": type(net).__name__,
             "optimizer": opt.state_dict(), "alrc": alrc.state_dict(), "iteration": iteration}
    if extra_state is not None:
        state.update(extra_state.state_dict())
    with atomic_path(ckpt) as tmp:
        torch.save(state, tmp)
