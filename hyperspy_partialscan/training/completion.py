"""Training of the completion generator (and fine-tuning of shipped models).

The recipe follows Ede & Beanland (2020) where a 2-core CPU allows:
random crops with dihedral augmentation, per-crop min/max normalisation,
partial scans simulated on the fly with every path type of
:mod:`hyperspy_partialscan.paths` over coverages 1/100 to 1/10 (optionally
extended into adaptive-style scans, :mod:`.adaptive_masks`), (and, for a
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .._validation import check_number
from ..metrics import blur_target, rmse_percent
from ..models.features import INPUT_CHANNELS, completion_inputs, frame_scale
from ..models.growth import add_attention, deepen_inner
from ..models.networks import MultiScaleDiscriminator, PartialScanGenerator
from ..paths import PATHS, generate_path
from ..simulate import NoiseModel, sample_frame
from .adaptive_masks import adaptive_style_path
from .crops import normalised_crops
from .loop import export_run, fit_network, initial_network, run_folder

__all__ = ["TrainConfig", "TRAIN_PATHS", "huberised_mse", "CropSampler", "validation_set", "train_completion"]

_log = logging.getLogger(__name__)

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
    adaptive_fraction: float = 0.0
    adaptive_initial: tuple = (0.25, 0.6)
    grow_inner_blocks: int | None = None  # with an init: deepen its inner generator to this many blocks
    attention_heads: int = 0  # a non-local block after the inner blocks (fresh, or added to an init)
    bf16: bool = False  # mixed precision (fit_network's bf16)

    def __post_init__(self):
        for name in ("iterations", "batch_size", "crop", "width", "inner_blocks", "outer_blocks", "path_bank",
                     "val_every", "checkpoint_every"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_number("attention_heads", self.attention_heads, low=0, integer=True)
        for name in ("lr", "lr_min", "huber_delta", "alrc_sigmas"):
            check_number(name, getattr(self, name), low=0, low_inclusive=False)
        for name in ("noise_fraction", "trainer_weight", "adversarial_weight", "adaptive_fraction"):
            check_number(name, getattr(self, name), low=0, high=None if name.endswith("weight") else 1)
        lo, hi = self.adaptive_initial
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"adaptive_initial must satisfy 0 < low <= high <= 1, got {self.adaptive_initial}")
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
                _log.debug("training path redrawn: %s", err)
        raise ValueError(f"no path of the mix {self.path_names} could be generated in {attempts} attempts over "
                         f"coverages {lo:g}-{hi:g} on frames of {sizes} px")

    def refresh(self, n):
        """Replace ``n`` random paths of the bank with new ones."""
        for i in self.rng.choice(len(self.bank), size=min(n, len(self.bank)), replace=False):
            self.bank[i] = self._new_path()

    def crop(self):
        """One (partial scan, target) pair, both (crop, crop), normalised to [0, 1]."""
        return self.crop_with_noise()[:2]

    def crop_with_noise(self):
        """One (partial scan, target, noise) triple: the pair of :meth:`crop` and its NoiseModel (or None).

        In the crop's units (clean frame normalised to [0, 1], zero signal at 0) the
        simulated noise variance is ``x / dose + detector_sigma**2``.
        """
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
            if rng.uniform() < c.adaptive_fraction:  # the window is the static start of an adaptive scan
                total = len(sub.positions) / rng.uniform(*c.adaptive_initial)
                sub = adaptive_style_path(x, sub, int(min(total, c.coverage_range[1] * x.size)), rng)
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
            return partial, target, noise

    def batch(self, n):
        """Network inputs (n, 4, H, W) and normalised targets (n, 1, H, W)."""
        pairs = [self.crop() for _ in range(n)]
        partial = np.stack([p for p, _ in pairs])
        inputs, scales = completion_inputs(partial)
        targets = np.stack([(t - lo) / s for (_, t), (lo, s) in zip(pairs, scales)])[:, None]
        return torch.from_numpy(inputs), torch.from_numpy(targets.astype(np.float32))


def validation_set(frames, crop=256, per_frame=2, coverage=1 / 20, paths=("spiral", "jittered_grid", "random"),
                   seed=1234):
    """Fixed validation crops: per frame up to ``per_frame`` crops, each path at ``coverage``.

    Returns a list of (path, partial, blurred target, raw target), crops min/max
    normalised to [0, 1].
    """
    rng = np.random.default_rng(seed)
    out = []
    for x in normalised_crops(frames, crop, per_frame, rng, shrink=True):  # the paths draw between the crops
        for name in paths:
            partial = sample_frame(x, generate_path(name, x.shape, coverage, rng))
            out.append((name, partial, blur_target(x), x))
    return out


def _evaluate(network, val):
    """Mean RMSE (% of range, vs blurred target) per path for the network and linear fill."""
    from ..models.inference import run_network, to_intensity_scale

    res = {}
    for name, partial, blurred, _ in val:  # one crop at a time: bounded memory, inputs built once
        inputs, scales = completion_inputs(partial[None])
        pred = to_intensity_scale(run_network(network, inputs, torch.device("cpu")), scales)[0]
        lo, s = scales[0]
        lin = inputs[0, 1] * s + lo
        res.setdefault(name, []).append((rmse_percent(pred, blurred), rmse_percent(lin, blurred)))
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


def train_completion(
    frames,
    out_dir,
    config=None,
    *,
    val_frames=None,
    init=None,
    resume=False,
    overwrite=False,
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
    overwrite : bool
        Start afresh in a run folder that holds a previous run (its files are
        moved aside, see :func:`~hyperspy_partialscan.training.run_folder`).
    name : str
        Name of the exported model.
    data_description : str or list, optional
        Recorded in the model's provenance.
    show_progressbar : bool
        Show the training progress bar.
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
    net, init_record, start = initial_network(PartialScanGenerator, "completion", init=init, out_dir=out,
                                              resume=resume, width=c.width, inner_blocks=c.inner_blocks,
                                              outer_blocks=c.outer_blocks, attention_heads=c.attention_heads)
    if start == 0 and init is not None and c.grow_inner_blocks:
        # grow the model to fine-tune: new inner blocks start as the identity
        init_record = {**init_record, "deepened": {"inner_blocks_from": net.config["inner_blocks"],
                                                   "inner_blocks_to": c.grow_inner_blocks}}
        net = deepen_inner(net, c.grow_inner_blocks)
    if start == 0 and init is not None and c.attention_heads not in (0, net.config.get("attention_heads", 0)):
        # the non-local block starts as the identity (an init with another block is refused by add_attention)
        init_record = {**init_record, "grown": {"attention_heads": c.attention_heads}}
        net = add_attention(net, c.attention_heads)
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

    with run_folder(out, name, resume=resume, overwrite=overwrite):
        history = fit_network(
            net, next_batch, compute_loss, iterations=c.iterations, lr=c.lr, lr_min=c.lr_min, warmup=c.warmup,
            alrc_sigmas=c.alrc_sigmas, out_dir=out, checkpoint_every=c.checkpoint_every, resume=resume,
            max_seconds=max_seconds, evaluate=evaluate if val else None, val_every=c.val_every,
            show_progressbar=show_progressbar, desc="training", after_step=after_step, extra_state=adversary,
            plot=_plot_curve, bf16=c.bf16,
        )
        cfg = asdict(c)
        cfg["coverage_range"] = list(c.coverage_range)
        return export_run(net, out, name, history=history, start=start, started=t0,
                          training={"config": cfg, "data": data_description, **init_record},
                          extra={"inputs": list(INPUT_CHANNELS)})
