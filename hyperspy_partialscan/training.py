"""Training of the completion generator (and fine-tuning of shipped models).

The recipe follows Ede & Beanland (2020) where a 2-core CPU allows:
random crops with dihedral augmentation, per-crop min/max normalisation,
partial scans simulated on the fly with every path type of
:mod:`hyperspy_partialscan.paths` over coverages 1/100 to 1/10 (and, for a
fraction of crops, the shot-noise / jitter model of
:mod:`hyperspy_partialscan.simulate`), targets Gaussian-blurred (5x5, sigma 2.5)
or raw, Huberised MSE with adaptive learning-rate clipping (ALRC) plus the
auxiliary trainer's loss, Adam with warm-up and cosine decay, checkpoints and
resume, and a validation curve (CSV + PNG). An optional adversarial stage adds
multi-scale spectrally normalised discriminators with a least-squares loss and a
replay of hard examples.

Entry points: :func:`train_completion` and the ``hyperspy-partialscan train``
command.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import __version__
from .metrics import blur_target, psnr, rmse_percent
from .models import Model, load_model, save_model
from .models.features import completion_inputs, frame_scale
from .models.networks import MultiScaleDiscriminator, PartialScanGenerator
from .paths import PATHS, generate_path
from .simulate import NoiseModel, sample_frame

__all__ = [
    "TrainConfig",
    "ALRC",
    "huberised_mse",
    "blur_target",
    "CropSampler",
    "train_completion",
    "export_checkpoint",
    "fit_network",
    "NoisyCropSampler",
    "train_denoiser",
    "psnr",
]

log = logging.getLogger(__name__)

#: paths mixed during training (all of them) and their relative frequency
TRAIN_PATHS = {name: 1.0 for name in PATHS}
TRAIN_PATHS.update({"spiral": 2.0, "jittered_grid": 2.0, "random": 1.5})


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (all recorded in the model's JSON)."""

    iterations: int = 10000
    batch_size: int = 16
    crop: int = 128
    lr: float = 1e-3
    lr_min: float = 2e-5
    warmup: int = 200
    coverage_range: tuple = (1 / 100, 1 / 10)
    target: str = "blurred"  # or "raw"
    noise_fraction: float = 0.2
    min_sampled_range: float = 0.2
    trainer_weight: float = 0.3
    huber_delta: float = 0.25
    alrc_sigmas: float = 3.0
    width: int = 32
    inner_blocks: int = 6
    outer_blocks: int = 2
    path_bank: int = 192
    virtual_sizes: tuple = (256, 512, 1024)
    val_every: int = 250
    checkpoint_every: int = 250
    seed: int = 0
    threads: int | None = None
    adversarial: bool = False
    adversarial_weight: float = 0.05
    replay: int = 2
    replay_size: int = 64
    paths: dict = field(default_factory=lambda: dict(TRAIN_PATHS))

    def __post_init__(self):
        if self.target not in ("blurred", "raw"):
            raise ValueError(f"target must be 'blurred' or 'raw', not {self.target!r}")
        lo, hi = self.coverage_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"coverage_range must satisfy 0 < low <= high <= 1, got {self.coverage_range}")
        if self.crop % PartialScanGenerator.multiple:
            raise ValueError(f"crop must be a multiple of {PartialScanGenerator.multiple}")
        unknown = set(self.paths) - set(PATHS)
        if unknown:
            raise ValueError(f"unknown scan path(s) {sorted(unknown)}")


def huberised_mse(pred, target, delta):
    """Mean squared error that grows linearly beyond ``delta`` (per pixel)."""
    d = (pred - target).abs()
    return torch.where(d < delta, d * d, 2 * delta * d - delta * delta).mean()


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


class CropSampler:
    """Random training crops with simulated partial scans.

    Parameters
    ----------
    frames : list of numpy.ndarray
        Source images (2-D, at least ``crop`` pixels in each direction).
    config : TrainConfig
    rng : numpy.random.Generator
    """

    def __init__(self, frames, config, rng):
        self.config = config
        self.rng = rng
        self.frames = [np.asarray(f, np.float32) for f in frames if min(f.shape) >= config.crop]
        if not self.frames:
            raise ValueError(f"no training frame is at least {config.crop}x{config.crop} pixels")
        area = np.array([f.size for f in self.frames], float)
        self.weights = np.sqrt(area) / np.sqrt(area).sum()
        names = list(config.paths)
        p = np.array([config.paths[n] for n in names], float)
        self.path_names, self.path_p = names, p / p.sum()
        self.bank = [self._new_path() for _ in range(config.path_bank)]

    def _new_path(self, attempts=20):
        """A random path of the mix; requests a path cannot meet (e.g. a few jittered lines on a
        small frame at the lowest coverage) are drawn again rather than ending the run."""
        c = self.config
        lo, hi = c.coverage_range
        sizes = [v for v in c.virtual_sizes if v >= c.crop] or [c.crop]
        for _ in range(attempts):
            coverage = float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
            name = self.rng.choice(self.path_names, p=self.path_p)
            size = int(self.rng.choice(sizes))
            try:
                return generate_path(name, (size, size), coverage, self.rng)
            except ValueError as err:
                log.debug("training path redrawn: %s", err)
        raise ValueError(f"no path of the mix {self.path_names} could be generated in {attempts} attempts over "
                         f"coverages {lo:g}-{hi:g} on frames of {sizes} px")

    def refresh(self, n):
        """Replace ``n`` random paths of the bank with new ones."""
        for i in self.rng.choice(len(self.bank), size=min(n, len(self.bank)), replace=False):
            self.bank[i] = self._new_path()

    def crop(self):
        """One (partial scan, target) pair, both (crop, crop), normalised to [0, 1]."""
        c, rng = self.config, self.rng
        while True:
            f = self.frames[rng.choice(len(self.frames), p=self.weights)]
            r = rng.integers(0, f.shape[0] - c.crop + 1)
            q = rng.integers(0, f.shape[1] - c.crop + 1)
            x = f[r : r + c.crop, q : q + c.crop]
            x = np.rot90(x, rng.integers(4))
            if rng.uniform() < 0.5:
                x = x[:, ::-1]
            lo, hi = float(x.min()), float(x.max())
            if hi - lo < 1e-6:
                continue
            x = np.ascontiguousarray((x - lo) / (hi - lo), dtype=np.float32)
            path = self.bank[rng.integers(len(self.bank))]
            if rng.uniform() < 0.5:
                path = path.transposed()
            top = rng.integers(0, path.shape[0] - c.crop + 1)
            left = rng.integers(0, path.shape[1] - c.crop + 1)
            sub = path.window(top, left, (c.crop, c.crop))
            if len(sub.positions) < 4:
                continue
            noise = None
            if rng.uniform() < c.noise_fraction:
                noise = NoiseModel(
                    dose=float(np.exp(rng.uniform(np.log(20), np.log(2000)))),
                    detector_sigma=float(rng.uniform(0, 0.02)),
                    line_jitter=float(rng.uniform(0, 0.5)),
                )
            partial = sample_frame(x, sub, noise, rng)
            if np.isfinite(partial).sum() < 4:
                continue
            # degenerate crops whose samples miss most of the contrast would get
            # enormous normalised targets (the frame is normalised from its samples)
            if frame_scale(partial)[1] < c.min_sampled_range:
                continue
            target = blur_target(x) if c.target == "blurred" else x
            return partial, target

    def batch(self, n):
        """Network inputs (n, 4, H, W) and normalised targets (n, 1, H, W)."""
        pairs = [self.crop() for _ in range(n)]
        partial = np.stack([p for p, _ in pairs])
        inputs, scales = completion_inputs(partial)
        targets = np.stack([(t - lo) / s for (_, t), (lo, s) in zip(pairs, scales)])[:, None]
        return torch.from_numpy(inputs), torch.from_numpy(targets.astype(np.float32))


def _lr(it, c, time_fraction=0.0):
    """Warm-up then cosine decay over the run's progress.

    Progress is the larger of the iteration fraction and ``time_fraction`` (the
    fraction of a wall-time budget spent), so a time-budgeted run still ends
    with a decayed learning rate.
    """
    if it < c.warmup:
        return c.lr * (it + 1) / c.warmup
    t = max((it - c.warmup) / max(c.iterations - c.warmup, 1), time_fraction)
    return c.lr_min + 0.5 * (c.lr - c.lr_min) * (1 + math.cos(math.pi * min(t, 1.0)))


def validation_set(frames, crop=256, per_frame=2, coverage=1 / 20, paths=("spiral", "jittered_grid", "random"), seed=1234):
    """Fixed validation crops: per frame up to ``per_frame`` crops, each path at ``coverage``.

    Returns a list of (path, partial, blurred target, raw target), crops min/max
    normalised to [0, 1].
    """
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        cs = min(crop, *f.shape)  # small frames are used whole
        for _ in range(per_frame):
            r = rng.integers(0, f.shape[0] - cs + 1)
            q = rng.integers(0, f.shape[1] - cs + 1)
            x = f[r : r + cs, q : q + cs].astype(np.float32)
            lo, hi = float(x.min()), float(x.max())
            if hi - lo < 1e-6:
                continue
            x = (x - lo) / (hi - lo)
            for name in paths:
                partial = sample_frame(x, generate_path(name, x.shape, coverage, rng))
                out.append((name, partial, blur_target(x), x))
    return out


def _evaluate(network, val):
    """Mean RMSE (% of range, vs blurred target) per path for the network and linear fill."""
    from .models.inference import complete_batch

    res = {}
    for i in range(len(val)):
        chunk = val[i : i + 1]
        pred = complete_batch(network, np.stack([v[1] for v in chunk]), device=torch.device("cpu"))
        inputs, scales = completion_inputs(np.stack([v[1] for v in chunk]))
        for (name, _, blurred, _), p, inp, (lo, s) in zip(chunk, pred, inputs, scales):
            lin = inp[1] * s + lo
            res.setdefault(name, []).append((rmse_percent(p, blurred), rmse_percent(lin, blurred)))
    return {k: tuple(np.mean(v, axis=0)) for k, v in res.items()}


def _plot_curve(csv_path, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    it = [int(r["iteration"]) for r in rows]
    for key in rows[0]:
        if key.startswith("val_") and not key.endswith("_linear"):
            ax.plot(it, [float(r[key]) for r in rows], label=key[4:])
            ax.axhline(float(rows[-1][key + "_linear"]), ls=":", color=ax.lines[-1].get_color())
    ax.set_xlabel("iteration")
    ax.set_ylabel("val RMSE (% of range, blurred target)")
    ax.set_title("Validation (dotted: linear interpolation)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


class _Adversary:
    """The adversarial stage: multi-scale discriminators, LSGAN losses and a replay of hard examples."""

    def __init__(self, config, rng):
        self.c, self.rng = config, rng
        self.disc = MultiScaleDiscriminator()
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=config.lr * 0.5, betas=(0.5, 0.999))
        self.replay_x = self.replay_y = None
        self.seed = 0

    def mix_replay(self, x, y):
        """Replace the last items of a batch by hard examples seen before."""
        if self.replay_x is None or not self.c.replay:
            return x, y
        k = min(self.c.replay, len(self.replay_x))
        pick = torch.from_numpy(self.rng.choice(len(self.replay_x), size=k, replace=False))
        return torch.cat([x[:-k], self.replay_x[pick]]), torch.cat([y[:-k], self.replay_y[pick]])

    def _scores(self, image, x):
        return self.disc(image, x[:, :1], torch.Generator().manual_seed(self.seed))

    def generator_loss(self, pred, x, mse):
        """Least-squares adversarial loss, scaled relative to the MSE term (the seeds' conditioning)."""
        self.seed = int(self.rng.integers(2**31))  # real and fake see the same crops
        fake = self._scores(pred, x)
        adv = sum(((f - 1) ** 2).mean() for f in fake) / len(fake)
        return self.c.adversarial_weight * adv * (mse.detach() / (adv.detach() + 1e-8))

    def update(self, pred, x, y, per_item):
        """One discriminator step, then keep the batch's hardest examples for replay."""
        real, fake = self._scores(y, x), self._scores(pred.detach(), x)
        d_loss = sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(real, fake)) / len(real)
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        hard = per_item.detach().argsort(descending=True)[: self.c.replay]
        hx, hy = x[hard], y[hard]
        self.replay_x = hx if self.replay_x is None else torch.cat([self.replay_x, hx])[-self.c.replay_size :]
        self.replay_y = hy if self.replay_y is None else torch.cat([self.replay_y, hy])[-self.c.replay_size :]

    def state_dict(self):
        return {"discriminator": self.disc.state_dict(), "d_optimizer": self.opt.state_dict()}

    def load_state_dict(self, state):
        if "discriminator" in state:
            self.disc.load_state_dict(state["discriminator"])
            self.opt.load_state_dict(state["d_optimizer"])


def _start_from(init, task, architecture):
    """The network to fine-tune from ``init`` (a Model, name or path; its architecture is kept) and the
    provenance entries recording it, or ``(None, {"init": None, "init_training": None})``."""
    if init is None:
        return None, {"init": None, "init_training": None}
    model = init if isinstance(init, Model) else load_model(init, task=task)
    net = architecture(**model.config["network"])
    net.load_state_dict(model.network.state_dict())
    # provenance chain: how the starting model itself was trained
    return net, {"init": {"name": model.name, "sha256": model.sha256}, "init_training": model.config.get("training")}


def train_completion(
    frames,
    out_dir,
    config=None,
    *,
    val_frames=None,
    init=None,
    resume=False,
    name="completion_model",
    data_description=None,
    show_progressbar=True,
    max_seconds=None,
):
    """Train (or fine-tune) a completion generator.

    Parameters
    ----------
    frames : list of numpy.ndarray
        Training images (see :func:`hyperspy_partialscan.io.read_frames`).
    out_dir : str or pathlib.Path
        Run folder: ``checkpoint.pt``, ``validation.csv``/``.png`` and the
        exported model ``NAME.safetensors`` + ``NAME.json``.
    config : TrainConfig, optional
    val_frames : list of numpy.ndarray, optional
        Frames for the validation curve.
    init : str or Model, optional
        Start from this model's weights (fine-tuning); its architecture is kept.
    resume : bool
        Continue from ``out_dir/checkpoint.pt``.
    name : str
        Name of the exported model.
    data_description : str or list, optional
        Recorded in the model's provenance.
    max_seconds : float, optional
        Stop (checkpoint and export) after this wall time.

    Returns
    -------
    pathlib.Path
        Path of the exported ``.safetensors`` file.
    """
    c = config or TrainConfig()
    out = Path(out_dir)
    if c.threads:
        torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)
    init_net, init_record = _start_from(init, "completion", PartialScanGenerator)
    if resume and (out / "checkpoint.pt").exists():
        net_config = torch.load(out / "checkpoint.pt", weights_only=True)["network_config"]
        net = PartialScanGenerator(**net_config)
    elif init_net is not None:
        net = init_net
    else:
        net = PartialScanGenerator(width=c.width, inner_blocks=c.inner_blocks, outer_blocks=c.outer_blocks)
    start = int(torch.load(out / "checkpoint.pt", weights_only=True)["iteration"]) if resume and (out / "checkpoint.pt").exists() else 0
    rng = np.random.default_rng([c.seed, start])
    sampler = CropSampler(frames, c, rng)
    adversary = _Adversary(c, rng) if c.adversarial else None
    val = validation_set(val_frames) if val_frames else []
    t0 = time.time()

    def next_batch(it):
        if it % 50 == 49:
            sampler.refresh(max(1, c.path_bank // 32))
        x, y = sampler.batch(c.batch_size)
        return adversary.mix_replay(x, y) if adversary is not None else (x, y)

    def compute_loss(net_, batch):
        x, y = batch
        pred, aux = net_(x, return_trainer=True)
        per_item = torch.stack([huberised_mse(p, t, c.huber_delta) for p, t in zip(pred, y)])
        loss = per_item.mean() + c.trainer_weight * huberised_mse(aux, F.avg_pool2d(y, 2), c.huber_delta)
        if adversary is not None:
            loss = loss + adversary.generator_loss(pred, x, per_item.mean())
        return loss, per_item, pred

    def after_step(batch, per_item, pred):
        if adversary is not None:
            adversary.update(pred, batch[0], batch[1], per_item)

    def evaluate(net_):
        row = {}
        for k, (g, lin) in _evaluate(net_, val).items():
            row[f"val_{k}"] = round(float(g), 3)
            row[f"val_{k}_linear"] = round(float(lin), 3)
        return row

    history = fit_network(
        net, next_batch, compute_loss, iterations=c.iterations, lr=c.lr, lr_min=c.lr_min, warmup=c.warmup,
        alrc_sigmas=c.alrc_sigmas, out_dir=out, checkpoint_every=c.checkpoint_every, resume=resume,
        max_seconds=max_seconds, evaluate=evaluate if val else None, val_every=c.val_every,
        show_progressbar=show_progressbar, desc="training", after_step=after_step, extra_state=adversary,
        plot=_plot_curve,
    )
    cfg = asdict(c)
    cfg["coverage_range"] = list(c.coverage_range)
    extra = {
        "package_version": __version__,
        "inputs": ["nearest", "linear", "mask", "distance"],
        "training": {
            "iterations": history[-1]["iteration"] if history else start,
            "config": cfg,
            "data": data_description,
            **init_record,
            "seconds_this_run": round(time.time() - t0, 1),
        },
        "validation": _last_validation(history, out),
    }
    return save_model(net, out / f"{name}.safetensors", task="completion", architecture="PartialScanGenerator", extra=extra)


def _last_validation(history, out):
    """The latest validation row of this run, else of the run folder's CSV."""
    rows = [h for h in history if any(k.startswith("val_") for k in h)]
    if rows:
        return rows[-1]
    path = Path(out) / "validation.csv" if out is not None else None
    if path is not None and path.exists():
        rows = list(csv.DictReader(open(path)))
        return rows[-1] if rows else None
    return None


def export_checkpoint(checkpoint, path, *, task="completion", extra=None):
    """Export a training checkpoint (``checkpoint.pt``) as a loadable model.

    The checkpoint is read with ``torch.load(weights_only=True)``.
    """
    state = torch.load(checkpoint, weights_only=True)
    net = PartialScanGenerator(**state["network_config"])
    net.load_state_dict(state["network"])
    info = {"package_version": __version__, "training": {"iterations": int(state["iteration"]), "checkpoint": str(checkpoint)}}
    info.update(extra or {})
    return save_model(net, path, task=task, architecture="PartialScanGenerator", extra=info)


# --------------------------------------------------------------------------- generic loop


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

    Returns
    -------
    list of dict
        One row per iteration of this run (iteration, loss, running loss,
        step time and, where evaluated, validation figures).
    """
    c = TrainConfig(iterations=iterations, lr=lr, lr_min=lr_min, warmup=warmup)
    # channels-last weights: the convolutions (and their gradients) run ~1.4x faster on CPU (oneDNN)
    net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    alrc = ALRC(alrc_sigmas)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    start = 0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if resume:
        if ckpt is None or not ckpt.exists():
            raise FileNotFoundError(f"cannot resume: {ckpt} does not exist")
        state = torch.load(ckpt, weights_only=True)
        net.load_state_dict(state["network"])
        opt.load_state_dict(state["optimizer"])
        alrc = ALRC(alrc_sigmas, mu=state["alrc"]["mu"], mu2=state["alrc"]["mu2"])
        if extra_state is not None:
            extra_state.load_state_dict(state)
        start = int(state["iteration"])
        log.info("%s resumed from %s at iteration %d", desc, ckpt, start)
    history, running, t0 = [], None, time.time()
    bar = None
    if show_progressbar:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, initial=start, desc=desc, unit="it")
    for it in range(start, iterations):
        t_step = time.time()
        lr_now = _lr(it, c, (time.time() - t0) / max_seconds if max_seconds else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr_now
        net.train()
        batch = next_batch(it)
        res = compute_loss(net, batch)
        loss, per_item, extras = (res[0], res[1], res[2:]) if isinstance(res, tuple) else (res.mean(), res, ())
        loss = alrc(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if after_step is not None:
            after_step(batch, per_item, *extras)
        value = float(per_item.detach().mean())
        running = value if running is None else 0.98 * running + 0.02 * value
        row = {"iteration": it + 1, "loss": value, "running_loss": running, "step_seconds": time.time() - t_step}
        done = it + 1 == iterations or (max_seconds is not None and time.time() - t0 > max_seconds)
        if evaluate is not None and ((it + 1) % val_every == 0 or done):
            net.eval()
            row.update(evaluate(net))
            row["seconds"] = round(time.time() - t0, 1)
            if out is not None:
                path = out / "validation.csv"
                new = not path.exists()
                with open(path, "a", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow(row)
                if plot is not None:
                    plot(path, out / "validation.png")
            log.info("%s validation %s", desc, row)
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.2e}", lr=f"{lr_now:.1e}")
        if (it + 1) % 50 == 0:
            log.info("%s it %d loss %.3e lr %.2e %.1fs", desc, it + 1, running, lr_now, time.time() - t0)
        if ckpt is not None and ((it + 1) % checkpoint_every == 0 or done):
            state = {"network": net.state_dict(), "network_config": net.config, "optimizer": opt.state_dict(),
                     "alrc": alrc.state_dict(), "iteration": it + 1}
            if extra_state is not None:
                state.update(extra_state.state_dict())
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
        if done:
            break
    if bar is not None:
        bar.close()
    net.eval()
    return history


# --------------------------------------------------------------------------- denoising


class NoisyCropSampler:
    """Random crops of clean frames degraded with realistic S/TEM noise.

    Doses are log-uniform over ``dose_range`` electrons per pixel at full scale
    (the seeds used 25 + Exp(75)); a fraction of crops also get Gaussian detector
    noise, scan-line jitter and streaks. Half of the crops carry the true
    per-pixel noise-level map (as when the dose is known), half a blind estimate.
    A fraction ``invert`` of the crops is contrast-inverted before the noise is
    applied, so that bright-field-like frames (bright, hence noisiest,
    background) are as common as dark-field ones whatever the training set.

    Each crop is min/max normalised over a random window of ``context`` crop
    sides holding it (clipped to the frame), as a crop inside a user's frame
    is: a featureless crop keeps its low contrast. (Normalising each crop by its
    own range, ``context=1``, stretches the reference images' own noise in
    flat areas to full scale and teaches the network to keep noise-like
    texture.)
    """

    def __init__(self, frames, crop=128, dose_range=(5.0, 1000.0), rng=None, invert=0.0, context=4):
        if not 0 <= invert <= 1:
            raise ValueError(f"invert must be a fraction in [0, 1], got {invert}")
        if not 0 < dose_range[0] <= dose_range[1]:
            raise ValueError(f"dose_range must be (low, high) electrons per pixel with 0 < low <= high, got {dose_range}")
        if context < 1:
            raise ValueError(f"context must be at least 1 (crop sides), got {context}")
        self.crop, self.dose_range, self.invert, self.context = crop, dose_range, float(invert), int(context)
        self.rng = np.random.default_rng(rng)
        self.frames = [np.asarray(f, np.float32) for f in frames if min(f.shape) >= crop]
        if not self.frames:
            raise ValueError(f"no training frame is at least {crop}x{crop} pixels")
        area = np.array([np.sqrt(f.size) for f in self.frames])
        self.weights = area / area.sum()

    def pair(self):
        """(noisy, clean, noise, known) for one crop, min/max normalised over its context window."""
        from .denoising import ImageNoise, degrade

        rng, c = self.rng, self.crop
        while True:
            f = self.frames[rng.choice(len(self.frames), p=self.weights)]
            # a context window (as a user's frame or a benchmark crop) holding the crop sets the intensity range
            h, w = min(f.shape[0], self.context * c), min(f.shape[1], self.context * c)
            wr, wq = rng.integers(0, f.shape[0] - h + 1), rng.integers(0, f.shape[1] - w + 1)
            r, q = wr + rng.integers(0, h - c + 1), wq + rng.integers(0, w - c + 1)
            window = f[wr : wr + h, wq : wq + w]
            lo, hi = float(window.min()), float(window.max())
            if hi - lo > 1e-6:
                break
        x = np.rot90(f[r : r + c, q : q + c], rng.integers(4))
        x = x[:, ::-1] if rng.uniform() < 0.5 else x
        x = np.ascontiguousarray((x - lo) / (hi - lo), np.float32)
        if self.invert and rng.uniform() < self.invert:
            x = 1 - x
        dose = float(np.exp(rng.uniform(*np.log(self.dose_range))))
        extra = rng.uniform() < 0.3
        noise = ImageNoise(
            dose=dose,
            detector_sigma=float(rng.uniform(0, 0.02)) if extra else 0.0,
            line_jitter=float(rng.uniform(0, 0.5)) if extra else 0.0,
            streak_sigma=float(rng.uniform(0, 0.02)) if extra else 0.0,
        )
        return degrade(x, noise, rng), x, noise, rng.uniform() < 0.5

    def batch(self, n):
        """Network inputs (n, 2, H, W) and targets (n, 1, H, W)."""
        from .models.features import denoising_inputs

        ins, tgs = [], []
        for _ in range(n):
            noisy, clean, noise, known = self.pair()
            vm = {"gain_factor": 1.0 / noise.dose, "gain_offset": noise.detector_sigma**2} if known else None
            inp, ((lo, s),) = denoising_inputs(noisy[None], variance_model=vm)
            ins.append(inp[0])
            tgs.append((clean - lo) / s)
        return torch.from_numpy(np.stack(ins)), torch.from_numpy(np.stack(tgs)[:, None].astype(np.float32))


def mse_per_item(net, batch):
    """Per-item mean squared error of ``net(inputs)`` against targets."""
    x, y = batch
    return ((net(x) - y) ** 2).mean(dim=(1, 2, 3))


def sure_per_item(net, x, probe=None, eps=1e-3):
    """Monte-Carlo SURE: per-item estimate of the MSE of ``net(x)`` against the noise-free frame.

    Stein's unbiased risk estimate for independent Gaussian noise of per-pixel
    variance σᵢ² (Ramani, Blu & Unser 2008; heteroscedastic form):
    ``mean((f(y) - y)² - σ² + 2 σ² ∂fᵢ/∂yᵢ)``, the divergence estimated with one
    random probe ``b``: ``b · (f(y + εb) - f(y)) / ε``. Needs no clean frame,
    so the denoiser itself (not a blind-spot variant) can be fitted to noisy
    data, and compared before and after fitting. Poisson noise is treated as
    Gaussian of the same variance (a close approximation from a few counts up).

    Parameters
    ----------
    net : torch.nn.Module
        Denoising network taking (N, 2, H, W) inputs (noisy, noise-level map;
        see :func:`~hyperspy_partialscan.models.features.denoising_inputs`).
    x : torch.Tensor
        Its inputs; σ is read from the noise-level channel.
    probe : torch.Tensor, optional
        (N, 1, H, W) standard normal probe (fixed probes make the estimate
        deterministic); drawn if omitted.
    eps : float
        Finite-difference step in normalised intensity units.

    Returns
    -------
    torch.Tensor
        (N,) risk estimates (normalised intensity units squared).
    """
    from .models.features import NOISE_MAP_GAIN

    y, level = x[:, :1], x[:, 1:]
    var = (level[:, :1] / NOISE_MAP_GAIN) ** 2
    b = torch.randn_like(y) if probe is None else probe
    f = net(x)
    f_probe = net(torch.cat([y + eps * b, level], 1))
    divergence = (var * b * (f_probe - f)).mean(dim=(1, 2, 3)) / eps
    return ((f - y) ** 2).mean(dim=(1, 2, 3)) - var.mean(dim=(1, 2, 3)) + 2 * divergence


def train_denoiser(frames, out_dir, *, iterations=5000, batch_size=8, crop=128, width=16, lr=1e-3, seed=0,
                   threads=None, val_frames=None, resume=False, max_seconds=None, name="denoising_model",
                   data_description=None, show_progressbar=True, init=None, invert=0.25, dose_range=(5.0, 1000.0),
                   context=4):
    """Train (or fine-tune) the supervised denoising network on clean frames degraded on the fly.

    Parameters
    ----------
    init : str or Model, optional
        Start from this denoising model's weights (its architecture is kept,
        ``width`` is ignored).
    invert : float
        Fraction of training crops that are contrast-inverted
        (see :class:`NoisyCropSampler`).
    dose_range : (float, float)
        Electrons per pixel at full scale, drawn log-uniformly.
    context : int
        Side of the window setting each crop's intensity range, in crop sides
        (see :class:`NoisyCropSampler`).

    Other parameters as :func:`train_completion`.

    Returns
    -------
    pathlib.Path
        Path of the exported ``.safetensors`` model.
    """
    from .models.networks import DenoisingUNet

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net, init_record = _start_from(init, "denoising", DenoisingUNet)
    if net is None:
        net = DenoisingUNet(width=width)
    sampler = NoisyCropSampler(frames, crop, dose_range=dose_range, rng=seed, invert=invert, context=context)
    evaluate = None
    if val_frames:
        val = denoising_validation_set(val_frames)

        def evaluate(n):
            return {f"val_psnr_dose{d:g}": round(v, 3) for d, v in _denoise_psnr(n, val).items()}

    t0 = time.time()
    history = fit_network(net, lambda it: sampler.batch(batch_size), mse_per_item, iterations=iterations, lr=lr,
                          out_dir=out_dir, resume=resume, max_seconds=max_seconds, evaluate=evaluate,
                          show_progressbar=show_progressbar, desc="denoiser")
    extra = {
        "package_version": __version__,
        "inputs": ["noisy", "noise_level"],
        "training": {"iterations": history[-1]["iteration"] if history else 0, "batch_size": batch_size, "crop": crop,
                     "lr": lr, "seed": seed, "dose_range": list(sampler.dose_range), "invert": sampler.invert,
                     "context": sampler.context,
                     "data": data_description, "seconds_this_run": round(time.time() - t0, 1), **init_record},
        "validation": _last_validation(history, out_dir),
    }
    return save_model(net, Path(out_dir) / f"{name}.safetensors", task="denoising", architecture="DenoisingUNet",
                      extra=extra)


def denoising_validation_set(frames, crop=256, per_frame=1, doses=(10, 50, 200), seed=4321):
    """Fixed (dose, noisy, clean) validation crops, clean min/max normalised to [0, 1]."""
    from .denoising import ImageNoise, degrade

    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        if min(f.shape) < crop:
            continue
        for _ in range(per_frame):
            r, q = rng.integers(0, f.shape[0] - crop + 1), rng.integers(0, f.shape[1] - crop + 1)
            x = f[r : r + crop, q : q + crop].astype(np.float32)
            lo, hi = float(x.min()), float(x.max())
            if hi - lo < 1e-6:
                continue
            x = (x - lo) / (hi - lo)
            for d in doses:
                out.append((d, degrade(x, ImageNoise(dose=d), rng), x))
    return out


def _denoise_psnr(net, val):
    from .models.inference import denoise_batch

    res = {}
    for d, noisy, clean in val:
        res.setdefault(d, []).append(psnr(denoise_batch(net, noisy[None], device=torch.device("cpu"))[0], clean))
    return {d: float(np.mean(v)) for d, v in res.items()}
