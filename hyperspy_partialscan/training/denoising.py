"""Supervised training of the denoising network on clean frames degraded on the fly."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..metrics import psnr
from .crops import normalised_crops
from .loop import export_run, fit_network, initial_network, run_folder

__all__ = ["NoisyCropSampler", "mse_per_item", "train_denoiser", "denoising_validation_set"]


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

    A fraction ``bin_fraction`` of the crops is drawn from the frames averaged
    over 2 x 2 pixel blocks: the reference images carry their own noise, and
    binning halves it (in standard deviation), so the network sees cleaner
    targets, at the scale of a binned frame.
    """

    def __init__(self, frames, crop=128, dose_range=(5.0, 1000.0), rng=None, invert=0.0, context=4,
                 bin_fraction=0.0):
        from ..blocks import block_mean

        if not 0 <= invert <= 1:
            raise ValueError(f"invert must be a fraction in [0, 1], got {invert}")
        if not 0 <= bin_fraction <= 1:
            raise ValueError(f"bin_fraction must be a fraction in [0, 1], got {bin_fraction}")
        if not 0 < dose_range[0] <= dose_range[1]:
            raise ValueError(f"dose_range must be (low, high) electrons per pixel with 0 < low <= high, "
                             f"got {dose_range}")
        if context < 1:
            raise ValueError(f"context must be at least 1 (crop sides), got {context}")
        self.crop, self.dose_range, self.invert, self.context = crop, dose_range, float(invert), int(context)
        self.bin_fraction = float(bin_fraction)
        self.rng = np.random.default_rng(rng)
        self.frames = [np.asarray(f, np.float32) for f in frames if min(f.shape) >= crop]
        if not self.frames:
            raise ValueError(f"no training frame is at least {crop}x{crop} pixels")
        area = np.array([np.sqrt(f.size) for f in self.frames])
        self.weights = area / area.sum()
        self.binned, self.binned_weights = [], None
        if self.bin_fraction > 0:  # every pixel is measured: block_mean is the plain block mean
            self.binned = [block_mean(f, 2).astype(np.float32) for f in self.frames if min(f.shape) >= 2 * crop]
            if not self.binned:
                raise ValueError(f"bin_fraction > 0 needs a training frame of at least {2 * crop}x{2 * crop} pixels")
            area = np.array([np.sqrt(f.size) for f in self.binned])
            self.binned_weights = area / area.sum()

    def pair(self):
        """(noisy, clean, noise, known) for one crop, min/max normalised over its context window."""
        from ..noise import FrameNoise, degrade

        rng, c = self.rng, self.crop
        frames, weights = self.frames, self.weights
        if self.bin_fraction and rng.uniform() < self.bin_fraction:
            frames, weights = self.binned, self.binned_weights
        while True:
            f = frames[rng.choice(len(frames), p=weights)]
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
        noise = FrameNoise(
            dose=dose,
            detector_sigma=float(rng.uniform(0, 0.02)) if extra else 0.0,
            line_jitter=float(rng.uniform(0, 0.5)) if extra else 0.0,
            streak_sigma=float(rng.uniform(0, 0.02)) if extra else 0.0,
        )
        return degrade(x, noise, rng), x, noise, rng.uniform() < 0.5

    def batch(self, n):
        """Network inputs (n, 2, H, W) and targets (n, 1, H, W)."""
        from ..models.features import denoising_inputs
        from ..noise import dose_variance_model

        ins, tgs = [], []
        for _ in range(n):
            noisy, clean, noise, known = self.pair()
            vm = dose_variance_model(noise.dose, noise.detector_sigma) if known else None
            inp, ((lo, s),) = denoising_inputs(noisy[None], variance_model=vm)
            ins.append(inp[0])
            tgs.append((clean - lo) / s)
        return torch.from_numpy(np.stack(ins)), torch.from_numpy(np.stack(tgs)[:, None].astype(np.float32))


def mse_per_item(net, batch):
    """Per-item mean squared error of ``net(inputs)`` against targets."""
    x, y = batch
    return ((net(x) - y) ** 2).mean(dim=(1, 2, 3))


def train_denoiser(frames, out_dir, *, iterations=5000, batch_size=8, crop=128, width=16, lr=1e-3, seed=0,
                   threads=None, val_frames=None, resume=False, overwrite=False, max_seconds=None,
                   name="denoising_model",
                   data_description=None, show_progressbar=True, init=None, invert=0.25, dose_range=(5.0, 1000.0),
                   context=4, bin_fraction=0.0, bf16=False, attention_heads=0, bottleneck_blocks=0,
                   wiener=None):
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
    bin_fraction : float
        Fraction of crops drawn from 2 x 2-binned frames, whose own noise is
        halved (see :class:`NoisyCropSampler`).
    bf16 : bool
        Mixed precision (see :func:`~hyperspy_partialscan.training.fit_network`).
    attention_heads : int
        A non-local block of this many heads at the U-Net's bottleneck
        (:class:`~hyperspy_partialscan.models.networks.NonLocalBlock`): in a
        fresh network, or added to the ``init`` model (starting as the
        identity). 0: none (an ``init`` model keeps its own).
    bottleneck_blocks : int
        Residual blocks at the U-Net's 1/8 scale: in a fresh network, or the
        ``init`` model deepened to this many (the new ones starting as the
        identity, :func:`~hyperspy_partialscan.models.growth.deepen_bottleneck`).
        0: none (an ``init`` model keeps its own).
    wiener : (int, int), optional
        ``(window, hop)`` of a sliding-window Wiener input channel
        (:class:`~hyperspy_partialscan.models.networks.DenoisingUNet`): in a
        fresh network, or added to the ``init`` model with zero weights
        (:func:`~hyperspy_partialscan.models.growth.add_wiener`). None:
        none (an ``init`` model keeps its own).

    iterations, batch_size, crop, width, lr, seed, threads : optional
        Training parameters, as the fields of
        :class:`~hyperspy_partialscan.training.TrainConfig`.

    The other parameters are those of :func:`train_completion`.

    Returns
    -------
    pathlib.Path
        Path of the exported ``.safetensors`` model.
    """
    from ..models.growth import add_attention, add_wiener, deepen_bottleneck
    from ..models.networks import DenoisingUNet

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    wiener = list(wiener) if wiener else None  # as the model's JSON records it
    net, init_record, start = initial_network(DenoisingUNet, "denoising", init=init, out_dir=out_dir, resume=resume,
                                              width=width, attention_heads=attention_heads,
                                              bottleneck_blocks=bottleneck_blocks, wiener=wiener)
    if start == 0 and init is not None and (attention_heads or bottleneck_blocks or wiener):
        if attention_heads:
            net = add_attention(net, attention_heads)
        if bottleneck_blocks:
            net = deepen_bottleneck(net, bottleneck_blocks)
        if wiener:
            net = add_wiener(net, *wiener)
        grown = {"attention_heads": attention_heads, "bottleneck_blocks": bottleneck_blocks,
                 "wiener": wiener}
        init_record = {**init_record, "grown": {k: v for k, v in grown.items() if v}}
    # a resumed run continues the crop stream instead of replaying its start
    stream = seed if start == 0 else [seed, start]
    sampler = NoisyCropSampler(frames, crop, dose_range=dose_range, rng=stream, invert=invert, context=context,
                               bin_fraction=bin_fraction)
    evaluate = None
    if val_frames:
        val = denoising_validation_set(val_frames)

        def evaluate(n):
            return {f"val_psnr_dose{d:g}": round(v, 3) for d, v in _denoise_psnr(n, val).items()}

    t0 = time.time()
    with run_folder(out_dir, name, resume=resume, overwrite=overwrite):
        history = fit_network(net, lambda it: sampler.batch(batch_size), mse_per_item, iterations=iterations, lr=lr,
                              out_dir=out_dir, resume=resume, max_seconds=max_seconds,
                              evaluate=evaluate,
                              show_progressbar=show_progressbar, desc="denoiser", bf16=bf16)
        return export_run(
            net, out_dir, name, history=history, start=start, started=t0,
            training={"batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed,
                      "dose_range": list(sampler.dose_range), "invert": sampler.invert, "context": sampler.context,
                      "bin_fraction": sampler.bin_fraction, "bf16": bf16, "attention_heads": attention_heads,
                      "bottleneck_blocks": bottleneck_blocks, "wiener": wiener, "data": data_description,
                      **init_record},
            extra={"inputs": ["noisy", "noise_level"]})


def denoising_validation_set(frames, crop=256, per_frame=1, doses=(10, 50, 200), seed=4321):
    """Fixed (dose, noisy, clean) validation crops, clean min/max normalised to [0, 1]."""
    from ..noise import FrameNoise, degrade

    rng = np.random.default_rng(seed)
    return [(d, degrade(x, FrameNoise(dose=d), rng), x) for x in normalised_crops(frames, crop, per_frame, rng)
            for d in doses]


def _denoise_psnr(net, val):
    from ..models.inference import denoise_batch

    res = {}
    for d, noisy, clean in val:
        res.setdefault(d, []).append(psnr(denoise_batch(net, noisy[None], device=torch.device("cpu"))[0], clean))
    return {d: float(np.mean(v)) for d, v in res.items()}
