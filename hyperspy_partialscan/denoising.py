"""Signal-level denoising: trained network, classical filters, PCA, and self-supervised fine-tuning.

Order for noisy partial scans: complete first, then denoise
(``s.complete_partial_scan().denoise()``). The completion generator is trained
to reproduce the (blurred) frame from noisy samples too, so most of the noise in
the unsampled area is already averaged away, and the denoiser expects a full
frame. Denoising a partial scan directly would need the denoiser to handle NaN
holes, which it does not: :func:`denoise` rejects frames with NaN.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docstrings import fill_doc
from ._signal_tools import check_laziness, deliver, noise_source, validate_signal2d
from ._validation import check_choice, check_method_arguments, check_number, check_seed
from ._version import __version__
from .conversion import warn_float32_precision
from .engine import (
    FrameFunction,
    FrameNetwork,
    check_finite_output,
    default_navigation_chunks,
    map_frames,
    plan_network,
    progressbar_wanted,
)
from .filters import CLASSICAL_DENOISERS, denoise_frame

if TYPE_CHECKING:
    from pathlib import Path

    from hyperspy.signals import BaseSignal

__all__ = ["denoise", "fit_denoiser", "DENOISING_METHODS", "FIT_METHODS", "NOISE_ESTIMATES"]

DENOISING_METHODS = ("generator",) + tuple(CLASSICAL_DENOISERS) + ("pca",)
DENOISER_TILE = 512
DENOISER_OVERLAP = 32
#: how a blind noise estimate is shared: one per frame, or one for the whole stack
NOISE_ESTIMATES = ("frame", "stack")
#: most pixels pooled for a stack's shared noise estimate (evenly spaced frames)
STACK_ESTIMATE_PIXELS = 2**22


def _check_finite(frame, index):
    if not np.isfinite(frame).all():
        if not np.isfinite(frame).any():
            raise ValueError(f"frame {int(index)} is all NaN: nothing to denoise")
        raise ValueError(
            f"frame {int(index)} has NaN or infinite pixels (a partial scan?): complete it first "
            "(complete_partial_scan, or `hyperspy-partialscan complete` on the command line)"
        )


def _check_frames_finite(frames):
    """Raise, as :func:`_check_finite` does, for the first frame of an (n, H, W) stack with NaN or inf."""
    bad = np.flatnonzero(~np.isfinite(frames).all(axis=(1, 2)))
    if bad.size:
        _check_finite(frames[bad[0]], bad[0])


@dataclass(frozen=True)
class NoiseLevel:
    """The noise level given to the denoising network, resolved per frame.

    ``kind``: ``"given sigma"`` (``params["sigma"]``), ``"variance model"``
    (HyperSpy's, ``params``), ``"simulation"`` (a
    :func:`~hyperspy_partialscan.to_partial_scan` record: dose and detector
    noise, scaled to each frame) or ``"blind"`` (estimated from each frame,
    :func:`~hyperspy_partialscan.noise.estimate_noise_model`). ``models``:
    variance models computed up front, by flat frame index (one: shared).
    """

    kind: str
    params: dict | None = None
    models: tuple | None = None

    def frame_model(self, frame, index):
        """The variance model (dict, data units) of one frame, or None for a given sigma."""
        from .noise import estimate_noise_model
        from .simulate import simulated_variance_model

        if self.kind == "given sigma":
            return None
        if self.kind == "variance model":
            return self.params
        if self.models is not None:
            return self.models[0 if len(self.models) == 1 else int(index)]
        if self.kind == "simulation":
            return simulated_variance_model(frame, self.params["dose"], self.params["detector_sigma"])
        gain, offset = estimate_noise_model(frame)
        return {"gain_factor": gain, "gain_offset": offset}


class DenoiserNetwork(FrameNetwork):
    """Picklable batch function running a denoising network (see :class:`~.engine.FrameNetwork`)."""

    task = "denoising"

    def __init__(self, plan, noise, tile=DENOISER_TILE, overlap=DENOISER_OVERLAP):
        super().__init__(plan, tile=tile, overlap=overlap)
        self.noise = noise

    def check(self, frame, index):
        _check_finite(frame, index)

    def prepare(self, frames, indices=None):
        indices = range(len(frames)) if indices is None else indices
        return frames, [self.noise.frame_model(f, i) for f, i in zip(frames, indices)]

    def run(self, network, device, tiles, tile_scales):
        from .models.inference import denoise_batch

        sigma = self.noise.params["sigma"] if self.noise.kind == "given sigma" else None
        return denoise_batch(network, tiles, device, self.plan.precision, None if sigma else tile_scales, sigma)


def _resolve_noise(signal, sigma, noise_estimate):
    """The :class:`NoiseLevel` of a signal's frames and its record for ``metadata.Signal.Denoising``.

    Per-frame models are computed up front for in-memory input (and recorded);
    for lazy input they are computed in the graph, except a stack's shared
    estimate, which reads up to :data:`STACK_ESTIMATE_PIXELS` of evenly spaced
    frames first.
    """
    from .noise import estimate_noise_model

    if sigma is not None:
        return NoiseLevel("given sigma", {"sigma": float(sigma)}), {"noise_level": "given sigma", "sigma": float(sigma)}
    kind, params = noise_source(signal)
    if kind == "variance model":
        return NoiseLevel(kind, params), {"noise_level": kind, "variance_model": dict(params)}
    kind = "blind" if kind == "estimated" else kind
    record = {"noise_level": kind} if kind == "simulation" else {"noise_level": kind, "noise_estimate": noise_estimate}
    nav = signal.axes_manager.navigation_shape[::-1]
    frames = signal.data.reshape((-1,) + signal.data.shape[len(nav):])
    if kind == "blind" and noise_estimate == "stack":
        step = max(1, int(np.ceil(len(frames) * frames[0].size / STACK_ESTIMATE_PIXELS)))
        sample = np.asarray(frames[::step].compute() if signal._lazy else frames[::step])
        gain, offset = estimate_noise_model(sample)
        models = ({"gain_factor": gain, "gain_offset": offset},)
        record["variance_model"] = dict(models[0])
        return NoiseLevel(kind, params, models), record
    if signal._lazy:
        record["variance_model"] = "estimated per frame in the graph (lazy input: not recorded)"
        return NoiseLevel(kind, params), record
    level = NoiseLevel(kind, params)
    models = tuple(level.frame_model(f, i) for i, f in enumerate(frames))
    record["variance_model"] = {key: (float(models[0][key]) if not nav else
                                      np.array([m.get(key, 0.0) for m in models]).reshape(nav))
                                for key in ("gain_factor", "gain_offset", "offset") if key in models[0]}
    return NoiseLevel(kind, params, models), record


@fill_doc
def denoise(
    signal: BaseSignal,
    method: str = "generator",
    *,
    model: str | Path | None = None,
    navigation_chunks: int | None = None,
    network_batch_size: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    sigma: float | None = None,
    noise_estimate: str = "frame",
    n_components: int | None = None,
    inplace: bool = False,
    lazy_output: bool | None = None,
    show_progressbar: bool | None = None,
    **method_params: Any,
) -> BaseSignal | None:
    """Denoise every frame of a signal.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Full frames (lazy or not, any navigation shape, at least one frame).
        Partial scans must be completed first: a frame with NaN or inf is an
        error.
    method : str
        ``"generator"`` (trained network, default), ``"gaussian"``,
        ``"nl_means"``, ``"tv"`` (scikit-image, parameters estimated from the
        data unless given in ``method_params``), ``"wiener"`` (empirical Wiener
        filter on overlapping 32 px windows with the blind Poisson-Gaussian noise
        model, :func:`~hyperspy_partialscan.filters.wiener`: strong on lattices)
        or ``"pca"`` (HyperSpy's decomposition of a stack; keeps ``n_components``).
    {model}
        A model fitted to one's own data: :func:`fit_denoiser`.
    {navigation_chunks}
    {network_batch_size}
    {device}
    {precision}
    sigma : float, optional
        Known noise standard deviation in data units (network); otherwise the
        Poisson model in ``metadata.Signal.Noise_properties.Variance_linear_model``
        is used when present (e.g. set by ``estimate_poissonian_noise_variance``),
        else the simulated noise recorded by
        :func:`~hyperspy_partialscan.to_partial_scan` (dose and detector noise,
        also kept by the completion), else the noise model (variance = gain *
        signal + offset) is estimated blindly
        (:func:`~hyperspy_partialscan.noise.estimate_noise_model`).
    noise_estimate : {{"frame", "stack"}}
        Blind estimate only: one per frame (default), or one shared by the
        whole stack (pooled from up to 4 Mpixels of evenly spaced frames; for
        small frames of one acquisition; lazy input: those frames are read
        first). The estimates are recorded in
        ``metadata.Signal.Denoising.variance_model`` (arrays of the navigation
        shape per frame; not recorded for lazy input).
    n_components : int, optional
        Components kept by ``"pca"`` (default: estimated from the scree plot's
        elbow).
    {inplace}
    {lazy_output}
    {show_progressbar}
    **method_params
        Parameters of the classical filter (e.g. ``sigma`` for gaussian is
        given as ``filter_sigma``; ``h`` for nl_means; ``weight`` for tv;
        ``window``, ``hop`` and ``variance_model`` for wiener).

    Returns
    -------
    Signal2D or LazySignal2D or None
        float32, titled ``"Denoised <title>"``, same class as the input (a
        partial scan's type is dropped), with ``metadata.Signal.Denoising``
        recording method, parameters, model and package version. None with
        ``inplace``.

    Raises
    ------
    ValueError
        Unknown method; no frames (navigation size 0); a frame with NaN or
        inf (checked up front for in-memory input); an argument the method
        does not use (``model``, ``network_batch_size``, ``sigma`` or
        ``noise_estimate`` without the generator, ``n_components`` without
        ``"pca"``, ``method_params`` with the generator or ``"pca"``); a
        non-positive ``sigma``; ``"pca"`` on a single frame; or ``inplace``
        with a change of laziness.
    FloatingPointError
        The method produced non-finite values; nothing is returned.

    Warns
    -----
    UserWarning
        Integer input whose values lose precision in float32 (counts above 2**24).

    Examples
    --------
    >>> import hyperspy.api as hs
    >>> import numpy as np
    >>> import hyperspy_partialscan as hps
    >>> clean = hps.specimens.nanoparticle_field((64, 64), seed=0)
    >>> noisy = hs.signals.Signal2D(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape))
    >>> out = hps.denoise(noisy, "gaussian", filter_sigma=1.0, show_progressbar=False)
    >>> out.metadata.Signal.Denoising.method, out.data.dtype.name
    ('gaussian', 'float32')
    >>> bool(np.abs(out.data - clean).mean() < np.abs(noisy.data - clean).mean())
    True

    The shipped network, on a completed partial scan (complete first, then
    denoise; ``partial.denoise(...)`` is the method form, for full frames):

    >>> partial = hps.to_partial_scan(noisy, "random", 0.5, seed=0, show_progressbar=False)
    >>> done = partial.complete_partial_scan("linear", show_progressbar=False)
    >>> hps.denoise(done, device="cpu", show_progressbar=False).metadata.General.title
    'Denoised Completed (50 % random)'

    Without a known noise level, the Poisson-Gaussian noise model is estimated
    from each frame and recorded:

    >>> shot = hs.signals.Signal2D(np.random.default_rng(1).poisson(50 * clean / clean.max()) / 50)
    >>> rec = hps.denoise(shot, device="cpu", show_progressbar=False).metadata.Signal.Denoising
    >>> rec.noise_level, rec.noise_estimate, bool(0.5 < 50 * rec.variance_model.gain_factor < 1.5)
    ('blind', 'frame', True)
    """
    validate_signal2d(signal, "denoise")
    if method not in DENOISING_METHODS:
        raise ValueError(f"unknown denoising method {method!r}; choose one of {', '.join(DENOISING_METHODS)}")
    lazy_output = check_laziness(signal, inplace, lazy_output)
    check_method_arguments(method, pca={"n_components": n_components}, generator={
        "model": model, "network_batch_size": network_batch_size, "sigma": sigma,
        "noise_estimate": None if noise_estimate == "frame" else noise_estimate})
    if method_params and method in ("generator", "pca"):
        what = "is a parameter" if len(method_params) == 1 else "are parameters"
        raise ValueError(f"{'= and '.join(sorted(method_params))}= {what} of the classical filters, "
                         f"not used by method={method!r}")
    check_number("sigma", sigma, low=0, low_inclusive=False, allow_none=True)
    check_number("navigation_chunks", navigation_chunks, low=1, integer=True, allow_none=True)
    check_choice("noise_estimate", noise_estimate, NOISE_ESTIMATES)
    data = signal.data
    frame_shape = signal.axes_manager.signal_shape[::-1]
    if not signal._lazy:
        warn_float32_precision(data, "denoise")
        _check_frames_finite(data.reshape((-1,) + tuple(frame_shape)))
    record = {"method": method, "package_version": __version__}
    if method == "pca":
        result = _pca(signal, n_components, record)
    else:
        if "filter_sigma" in method_params:
            method_params["sigma"] = method_params.pop("filter_sigma")
        if method == "generator":
            plan = plan_network(model, "denoising", device, precision, network_batch_size)
            noise, noise_record = _resolve_noise(signal, sigma, noise_estimate)
            func = DenoiserNetwork(plan, noise)
            record.update(plan.provenance(), **noise_record)
            token = (method, plan, noise.kind, noise.params, noise.models)
            batch = plan.batch_size
        else:
            func = FrameFunction(functools.partial(denoise_frame, method=method, **method_params), _check_finite,
                                 f"{method} denoising")
            record["parameters"] = dict(method_params) or "estimated from the data"
            token = (method, sorted(method_params.items()))
            batch = None
        if data.dtype.kind != "f":
            data = data.astype(np.float32)
        chunks = navigation_chunks or default_navigation_chunks(frame_shape, batch)
        result = map_frames(data, func, batch_size=chunks, name=f"denoise-{method}",
                            token=token, with_indices=True)
    return deliver(
        signal, result, lazy_output=lazy_output, show_progressbar=show_progressbar, inplace=inplace,
        title=f"Denoised {signal.metadata.General.title}".rstrip(), record_path="Signal.Denoising", record=record,
        signal_type="" if signal.metadata.Signal.get_item("signal_type") == "partial_scan" else None,
    )


def _pca(signal, n_components, record):
    """PCA denoising of a stack through HyperSpy's own decomposition."""
    if signal.axes_manager.navigation_size < 2:
        raise ValueError("method='pca' needs a stack (navigation size >= 2): PCA denoises across frames")
    s = signal.deepcopy()
    if s._lazy:  # the decomposition needs the whole stack in memory; in-memory input was checked by denoise
        s.compute()
        _check_frames_finite(s.data.reshape((-1,) + s.data.shape[-2:]))
    s.change_dtype("float64")
    s.decomposition(algorithm="SVD", output_dimension=None, print_info=False)
    if n_components is None:
        n_components = int(s.estimate_elbow_position()) + 1
    record["n_components"] = int(n_components)
    out = s.get_decomposition_model(int(n_components)).data.astype(np.float32)
    check_finite_output(out.reshape((-1,) + out.shape[-2:]), None, "PCA denoising")
    return out


#: the self-supervised objectives of :func:`fit_denoiser`
FIT_METHODS = ("blind_spot", "sure", "pure", "noise2noise")


@fill_doc
def fit_denoiser(signal: BaseSignal, *, init: str | Path | None = "default", epochs: int = 20,
                 method: str = "blind_spot", batch_size: int = 8, crop: int = 128, lr: float = 2e-4,
                 sigma: float | None = None, keep_best: bool = True, output: str | Path | None = None, seed: int = 0,
                 show_progressbar: bool | None = None) -> Any:
    """Fine-tune a denoiser on the user's own noisy data, without clean images.

    Parameters
    ----------
    signal : hyperspy.signals.Signal2D
        Noisy frames (a single image or a stack; computed if lazy).
    init : str, pathlib.Path or None
        Model to start from (``"default"``: the shipped denoiser; a name or
        path; None: train from scratch).
    epochs : int
        Passes over the data; one epoch is as many crops as fit in the frames.
    method : {{"blind_spot", "sure", "pure", "noise2noise"}}
        ``"blind_spot"`` (Noise2Void/Noise2Self): a random 2 % of pixels are
        replaced by a neighbour's value and the loss is the error at those
        pixels only. ``"sure"``: the network itself is fitted by minimising
        Stein's unbiased estimate of its error against the noise-free frame
        (Monte-Carlo SURE, :func:`~hyperspy_partialscan.training.sure_per_item`;
        needs the noise level, which is known or estimated as for
        :func:`denoise`). ``"pure"``: the same with the Poisson-Gaussian
        unbiased risk estimate
        (:func:`~hyperspy_partialscan.training.pure_per_item`), which, unlike
        SURE, stays unbiased for shot noise at a few counts per pixel; it
        uses the frames' variance model (gain_factor, gain_offset and offset,
        the data value of zero signal: resolved as for :func:`denoise`; with
        ``sigma``, Gaussian noise, it is SURE of that constant variance).
        ``"noise2noise"``: the frames must be repeated
        exposures of the same field; the network maps one frame to another.
        The trainer is :func:`hyperspy_partialscan.training.fit_self_supervised`.
    batch_size : int
        Crops per fitting step.
    crop : int
        Side of the square training crops in pixels (at least 16; reduced to
        fit frames smaller than it).
    lr : float
        Learning rate of the Adam optimiser.
    sigma : float, optional
        Known noise standard deviation in data units; otherwise the Poisson
        model in ``metadata.Signal.Noise_properties.Variance_linear_model``, else
        the simulation record of a partial scan, else a blind estimate per
        frame (resolved as :func:`denoise` does, which should be called the
        same way).
    keep_best : bool
        Estimate the network's error on fixed crops of the data before fitting
        and after every epoch, and return the weights with the lowest
        estimate, the starting ones included: fitting then cannot make the
        estimated error worse. The estimate is PURE for ``"pure"``, SURE
        otherwise; recorded in the model's ``training`` record
        (``sure_start``, ``sure_best``, ``best_epoch``, ``sure_per_epoch``, or
        ``pure_*``).
    output : str or pathlib.Path, optional
        Where to save the model (``.safetensors`` + ``.json``); default: a
        temporary folder.
    {seed}
    {show_progressbar}

    Returns
    -------
    Model
        Usable as ``denoise(signal, model=...)``; saved to ``output``.

    Raises
    ------
    ValueError
        Unknown method, no frames (navigation size 0), a frame with NaN or
        inf, a non-positive ``sigma``, ``epochs`` or ``batch_size`` not an
        integer >= 1, ``crop`` not an integer >= 16, a non-positive ``lr``,
        an invalid ``seed``, frames smaller than 32 px, or ``"noise2noise"``
        on a single frame.

    Examples
    --------
    >>> import numpy as np, hyperspy.api as hs
    >>> import hyperspy_partialscan as hps
    >>> from hyperspy_partialscan.specimens import nanoparticle_field
    >>> rng = np.random.default_rng(0)
    >>> noisy = hs.signals.Signal2D(rng.poisson(50 * nanoparticle_field((64, 64), seed=0)) / 50)
    >>> model = hps.fit_denoiser(noisy, epochs=1, crop=32, keep_best=False, show_progressbar=False)
    >>> model.task, model.config["training"]["self_supervised"]
    ('denoising', 'blind_spot')
    >>> hps.denoise(noisy, model=model, device="cpu", show_progressbar=False).data.shape
    (64, 64)
    """
    import tempfile
    from pathlib import Path

    from .models import load_model, save_model
    from .models.features import denoising_inputs, normalised_noise
    from .models.networks import DenoisingUNet
    from .training.self_supervised import fit_self_supervised

    validate_signal2d(signal, "fit_denoiser")
    if method not in FIT_METHODS:
        raise ValueError(f"unknown self-supervised method {method!r}; choose one of {', '.join(FIT_METHODS)}")
    check_number("sigma", sigma, low=0, low_inclusive=False, allow_none=True)
    check_number("epochs", epochs, low=1, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("crop", crop, low=16, integer=True)
    check_number("lr", lr, low=0, low_inclusive=False)
    check_seed(seed)
    show_progressbar = progressbar_wanted(show_progressbar)
    data = signal.data.compute() if signal._lazy else signal.data
    frames = np.asarray(data, np.float32).reshape((-1,) + data.shape[-2:])
    _check_frames_finite(frames)
    if min(frames.shape[-2:]) < crop:
        crop = int(min(frames.shape[-2:]) // 8 * 8)
        if crop < 32:
            raise ValueError(f"frames {frames.shape[-2:]} are too small to fit a denoiser (need >= 32 px)")
    if method == "noise2noise" and len(frames) < 2:
        raise ValueError("noise2noise needs a stack of at least two repeated frames of the same field")
    base = None if init is None else load_model(None if init == "default" else init, task="denoising")
    net = DenoisingUNet() if base is None else DenoisingUNet(**base.config["network"])
    if base is not None:
        net.load_state_dict(base.network.state_dict())
    # frames normalised once; crops keep the whole frame's normalisation
    noise, noise_record = _resolve_noise(signal, sigma, "frame")  # as denoise resolves it
    models = None if sigma is not None else [noise.frame_model(f, i) for i, f in enumerate(frames)]
    inputs, scales = denoising_inputs(frames, models, sigma)
    frame_noise = None
    if method == "pure":  # each frame's model in its normalisation's units; a blind estimate's small negative
        # gain or gain_offset (an estimation error; the noise map clips the variance at 0 likewise) counts as 0
        frame_noise = np.array([normalised_noise(lo, s, models[i] if models else None, sigma)
                                for i, (lo, s) in enumerate(scales)])
        frame_noise[:, [0, 2]] = frame_noise[:, [0, 2]].clip(0)
    fit = fit_self_supervised(net, inputs, method=method, epochs=epochs, batch_size=batch_size, crop=crop, lr=lr,
                              seed=seed, keep_best=keep_best, noise=frame_noise, show_progressbar=show_progressbar)
    history = fit.pop("history")
    training = {
        "self_supervised": method,
        "init": base.name if base is not None else None,
        "init_sha256": base.sha256 if base is not None else None,
        "epochs": epochs,
        "iterations": fit.pop("iterations"),
        "frames": int(len(frames)),
        "frame_shape": list(frames.shape[1:]),
        "source_title": signal.metadata.General.title,
        "first_loss": history[0]["loss"],
        "final_running_loss": history[-1]["running_loss"],
        "noise_level": noise_record["noise_level"],
        **fit,
    }
    out = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="partialscan_denoiser_")) / "denoiser"
    extra = {"package_version": __version__, "inputs": ["noisy", "noise_level"], "training": training}
    path = save_model(net, out, task="denoising", architecture="DenoisingUNet", extra=extra)
    return load_model(path, task="denoising")
