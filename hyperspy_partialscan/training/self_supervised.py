"""Fitting a denoiser to the user's own noisy frames, without clean references.

Four self-supervised objectives (scikit-image keeps its self-supervised
calibration in one module too, ``restoration/j_invariant.py``):

``"blind_spot"``
    Noise2Void / Noise2Self: a random 2 % of pixels are replaced by a
    neighbour's value and the loss is the error at those pixels only.
``"sure"``
    The network itself is fitted by minimising Stein's unbiased estimate of its
    error against the noise-free frame (:func:`~.risk.sure_per_item`).
``"pure"``
    The same with the Poisson(-Gaussian) unbiased risk estimate
    (:func:`~.risk.pure_per_item`), unbiased for shot noise of known gain at a
    few counts per pixel, where SURE is not; needs each frame's noise model.
``"noise2noise"``
    Repeated exposures of one field: the network maps one frame to another.

With ``keep_best`` the network's risk estimate on fixed crops and probes is
measured before fitting and after every epoch, and the weights with the lowest
estimate are kept (the starting ones included), so fitting cannot make the
estimated error worse. The estimate is PURE for ``"pure"`` and SURE otherwise
(SURE needs no noise model beyond the network's noise-level channel, so the
other objectives keep working without one).
"""

from __future__ import annotations

import numpy as np
import torch

from .loop import fit_network
from .risk import draw_probe, pure_per_item, sure_per_item

__all__ = ["fit_self_supervised"]

#: fraction of pixels masked by the blind-spot objective
BLIND_SPOT_FRACTION = 0.02


class _Crops:
    """Random, rotated crops of normalised network inputs (n_frames, 2, H, W)."""

    def __init__(self, inputs, crop, rng, noise=None):
        self.inputs, self.crop, self.rng, self.noise = inputs, crop, rng, noise

    def draw(self, n):
        """Frame indices, top, left and rotation of ``n`` crops."""
        rng, (_, _, h, w) = self.rng, self.inputs.shape
        return (rng.integers(0, len(self.inputs), n), rng.integers(0, h - self.crop + 1, n),
                rng.integers(0, w - self.crop + 1, n), rng.integers(0, 4, n))

    def take(self, i, r, q, k, channels=slice(None)):
        c = self.crop
        return np.rot90(self.inputs[i, channels, r : r + c, q : q + c], k, axes=(-2, -1))

    def stack(self, draws, channels=slice(None)):
        return torch.from_numpy(np.ascontiguousarray(np.stack([self.take(*a, channels) for a in zip(*draws)])))

    def blind_spot(self, n):
        """Inputs with masked pixels replaced by a random neighbour (never themselves), targets, mask."""
        rng, crop = self.rng, self.crop
        x = self.stack(self.draw(n)).numpy().copy()
        target = x[:, :1].copy()
        mask = rng.uniform(size=target.shape) < BLIND_SPOT_FRACTION
        dy, dx = rng.integers(-2, 3, mask.sum()), rng.integers(-2, 3, mask.sum())
        dx[(dy == 0) & (dx == 0)] = 1
        n_, _, yy, xx = np.nonzero(mask)
        x[n_, 0, yy, xx] = x[n_, 0, np.clip(yy + dy, 0, crop - 1), np.clip(xx + dx, 0, crop - 1)]
        return torch.from_numpy(x), torch.from_numpy(target), torch.from_numpy(mask.astype(np.float32))

    def noise2noise(self, n):
        """Crops of one frame as inputs and the same crops of another frame as targets."""
        draws = self.draw(n)
        other = (draws[0] + self.rng.integers(1, len(self.inputs), n)) % len(self.inputs)
        return self.stack(draws), self.stack((other,) + draws[1:], slice(0, 1)), None

    def sure(self, n):
        """Crops, no target, no noise model (SURE reads the noise-level channel)."""
        return self.stack(self.draw(n)), None, None

    def pure(self, n):
        """Crops, no target, and the (n, 3) noise models (gain, offset, gain_offset) of their frames."""
        draws = self.draw(n)
        return self.stack(draws), None, self.noise_of(draws[0])

    def noise_of(self, frames):
        return torch.from_numpy(np.ascontiguousarray(self.noise[frames], dtype=np.float32))


def _risk(net, x, noise, probe=None):
    """SURE (``noise`` None) or PURE with the (N, 3) noise models, per item."""
    if noise is None:
        return sure_per_item(net, x, probe)
    return pure_per_item(net, x, noise[:, 0], noise[:, 1], noise[:, 2], probe)


def _loss(net, batch):
    x, y, mask = batch
    if y is None:  # a risk estimate; the third item is the noise model (PURE) or None (SURE)
        return _risk(net, x, mask)
    err = (net(x) - y) ** 2
    if mask is None:
        return err.mean(dim=(1, 2, 3))
    return (err * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1)


class _BestByRisk:
    """A risk estimate (``"sure"``/``"pure"``) of the network on fixed crops and probes; remembers the best weights."""

    def __init__(self, crops, n, rng, name="sure"):
        draws = crops.draw(n)
        self.name, self.x = name, crops.stack(draws)
        self.noise = crops.noise_of(draws[0]) if name == "pure" else None
        self.probe = draw_probe(name, rng, (n, 1) + tuple(self.x.shape[-2:]))
        self.curve, self.value, self.epoch, self.state = [], None, None, None

    def __call__(self, net):
        with torch.no_grad():
            value = float(_risk(net, self.x, self.noise, self.probe).mean())
        if self.value is None or value < self.value:
            self.value, self.epoch = value, len(self.curve)
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self.curve.append(value)
        return {self.name: value}

    def record(self):
        n = self.name
        return {f"{n}_start": self.curve[0], f"{n}_best": self.value, "best_epoch": self.epoch,
                f"{n}_per_epoch": list(self.curve)}


def _check_noise(noise, n_frames):
    """The (n_frames, 3) noise models of :func:`fit_self_supervised` as float64; ValueError naming ``noise``."""
    if noise is None:
        raise ValueError("noise: method 'pure' needs each frame's noise model (gain, offset, gain_offset in "
                         "normalised units; see models.features.normalised_noise)")
    arr = np.asarray(noise, np.float64)
    if arr.shape != (n_frames, 3) or not np.isfinite(arr).all():
        raise ValueError(f"noise must be finite, shape ({n_frames}, 3) (gain, offset, gain_offset per frame), "
                         f"got shape {arr.shape}")
    if (arr[:, [0, 2]] < 0).any() or not (arr[:, [0, 2]] > 0).any(axis=1).all():
        raise ValueError("noise: gain and gain_offset must be >= 0 and not both 0 (a frame without noise)")
    return arr


def fit_self_supervised(net, inputs, *, method="blind_spot", epochs=20, batch_size=8, crop=128, lr=2e-4, seed=0,
                        keep_best=True, noise=None, show_progressbar=True):
    """Fit a denoising network to noisy frames with a self-supervised objective.

    Parameters
    ----------
    net : torch.nn.Module
        Denoising network (inputs: noisy frame and noise-level map); modified
        in place.
    inputs : numpy.ndarray
        (n_frames, 2, H, W) network inputs of the whole frames (see
        :func:`~hyperspy_partialscan.models.features.denoising_inputs`); crops
        keep each frame's normalisation.
    method : {"blind_spot", "sure", "pure", "noise2noise"}
    epochs : int
        Passes over the data; one epoch is as many crops as fit in the frames.
    batch_size, crop, lr : int, int, float
    seed : int
    keep_best : bool
        Select the weights by PURE (``"pure"``) or SURE (the other methods) on
        fixed crops (see the module docstring).
    noise : array_like, optional
        (n_frames, 3) each frame's noise model in normalised units,
        ``(gain, offset, gain_offset)``
        (:func:`~hyperspy_partialscan.models.features.normalised_noise`);
        needed by ``"pure"`` only.
    show_progressbar : bool

    Returns
    -------
    dict
        ``iterations``, ``history`` (one row per iteration) and, with
        ``keep_best``, the record of the risk estimate (``sure_start``,
        ``sure_best``, ``best_epoch``, ``sure_per_epoch``; ``pure_*`` for
        ``"pure"``).

    Raises
    ------
    ValueError
        Unknown ``method``; ``"pure"`` without ``noise``, or ``noise`` of the
        wrong shape, not finite, negative or zero.

    Examples
    --------
    >>> import numpy as np
    >>> from hyperspy_partialscan.models.features import denoising_inputs
    >>> from hyperspy_partialscan.models.networks import DenoisingUNet
    >>> from hyperspy_partialscan.training import fit_self_supervised
    >>> rng = np.random.default_rng(0)
    >>> inputs, _ = denoising_inputs(rng.poisson(20, (1, 64, 64)).astype("float32"))
    >>> out = fit_self_supervised(DenoisingUNet(width=4), inputs, epochs=1, crop=32, show_progressbar=False)
    >>> out["iterations"], out["best_epoch"] in (0, 1)
    (1, True)
    """
    objectives = {"blind_spot": _Crops.blind_spot, "sure": _Crops.sure, "pure": _Crops.pure,
                  "noise2noise": _Crops.noise2noise}
    if method not in objectives:
        raise ValueError(f"unknown self-supervised method {method!r}; choose one of {', '.join(objectives)}")
    noise = _check_noise(noise, len(inputs)) if method == "pure" else None
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    crops = _Crops(inputs, crop, rng, noise)
    per_epoch = max(1, int(np.ceil(inputs.shape[0] * inputs.shape[-2] * inputs.shape[-1] / crop**2 / batch_size)))
    iterations = max(1, epochs * per_epoch)
    best = None
    if keep_best:
        best = _BestByRisk(crops, max(16, batch_size), rng, "pure" if method == "pure" else "sure")
        net.eval()
        best(net)
    history = fit_network(net, lambda it: objectives[method](crops, batch_size), _loss, iterations=iterations, lr=lr,
                          warmup=min(50, iterations // 5 + 1), evaluate=best, val_every=per_epoch,
                          show_progressbar=show_progressbar, desc=f"fit_denoiser ({method})")
    result = {"iterations": iterations, "history": history}
    if best is not None:
        net.load_state_dict(best.state)
        result.update(best.record())
    return result
