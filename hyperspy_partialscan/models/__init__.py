"""Trained models: discovery, safe loading and a thread-safe cache.

A model is a pair of files with the same stem: ``NAME.safetensors`` (weights,
loaded without unpickling anything) and ``NAME.json`` (configuration and
provenance: task, architecture, network config, training data and iterations,
validation figures, and the SHA-256 of the weights file, which loading checks).
Shipped models live in this package's ``weights`` folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Model", "list_models", "load_model", "save_model", "WEIGHTS_DIR", "DEFAULT_MODELS"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: default model name per task
DEFAULT_MODELS = {"completion": "completion_default", "denoising": "denoising_default",
                  "uncertainty": "uncertainty_default"}


@dataclass
class Model:
    """A loaded network with its configuration.

    Attributes
    ----------
    name : str
    task : str
        ``"completion"``, ``"denoising"`` or ``"uncertainty"``.
    network : torch.nn.Module
        In evaluation mode, on the CPU.
    config : dict
        The JSON configuration (architecture, network config, provenance).
    path : pathlib.Path
        The weights file.
    sha256 : str
        Hash of the weights file.
    """

    name: str
    task: str
    network: object
    config: dict
    path: Path
    sha256: str
    _on_device: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def lineage(self):
        """The training records of this model's run and of the runs it was fine-tuned from, newest first.

        Returns
        -------
        list of dict
            Empty when the provenance records no training. Each record's ``init``
            (name and SHA-256) is the model that run started from.
        """
        records, training = [], self.config.get("training")
        while training:
            records.append(training)
            training = training.get("init_training")
        return records

    @property
    def training_iterations(self):
        """Training iterations in total: this model's run plus those of the models it was fine-tuned from.

        Returns
        -------
        int or None
            None when the provenance does not record iterations.
        """
        counts = [record.get("iterations") for record in self.lineage]
        return sum(int(n) for n in counts) if counts and None not in counts else None

    def on(self, device):
        """The network on ``device``, ready for inference (a cached copy per device; thread-safe).

        The copy's convolution weights are in channels-last memory format, which
        the convolution kernels of CPUs (oneDNN) and GPUs (tensor cores) run
        fastest; :attr:`network` itself is left as loaded.
        """
        import copy

        import torch

        key = str(device)
        with self._lock:
            if key not in self._on_device:
                net = copy.deepcopy(self.network).to(device=device, memory_format=torch.channels_last)
                self._on_device[key] = net.eval()
            return self._on_device[key]

    def provenance(self):
        """Short provenance dictionary for metadata."""
        return {"name": self.name, "sha256": self.sha256, "architecture": self.config.get("architecture")}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: a model's JSON larger than this is refused before parsing (the shipped ones are a few KiB)
MAX_CONFIG_BYTES = 1 << 20
#: the task each architecture is trained for
ARCHITECTURE_TASKS = {"PartialScanGenerator": "completion", "DenoisingUNet": "denoising",
                      "UncertaintyUNet": "uncertainty"}


def _is_plain_name(name):
    """Whether ``name`` can only mean a file of the weights folder (no folder part, no ``..``, not hidden)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(".")
            and not any(sep in name for sep in ("/", "\\", os.sep)) and ".." not in name)


def _shipped(name):
    """The weights file of the shipped model ``name``, or None (never a path outside :data:`WEIGHTS_DIR`)."""
    if not _is_plain_name(name):
        return None
    p = WEIGHTS_DIR / f"{name}.safetensors"
    if not p.is_file() or p.resolve().parent != WEIGHTS_DIR.resolve():
        return None
    return p


def _resolve(name_or_path):
    p = Path(name_or_path)
    if p.is_dir():
        cands = sorted(p.glob("*.safetensors"))
        if len(cands) != 1:
            raise FileNotFoundError(f"model folder {p} must hold exactly one .safetensors file, found {len(cands)}")
        p = cands[0]
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    elif p.suffix != ".safetensors":
        shipped = _shipped(str(name_or_path))
        if shipped is not None and not p.exists():
            p = shipped
        elif not p.exists():
            raise ValueError(
                f"unknown model {str(name_or_path)!r}: not a shipped model ({', '.join(list_models()) or 'none'}) "
                "nor a path to NAME.safetensors / NAME.json / a model folder"
            )
    if not p.exists():
        raise FileNotFoundError(f"model weights file {p} does not exist")
    cfg = p.with_suffix(".json")
    if not cfg.exists():
        raise FileNotFoundError(f"model configuration {cfg} is missing beside the weights {p.name}")
    return p, cfg


def _read_config_bytes(cpath):
    """The JSON's bytes, refused unread when larger than :data:`MAX_CONFIG_BYTES`."""
    size = cpath.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"model configuration {cpath} is {size} bytes, over the limit of {MAX_CONFIG_BYTES} "
                         "(not a model configuration?)")
    with open(cpath, "rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"model configuration {cpath} is over the limit of {MAX_CONFIG_BYTES} bytes")
    return raw


def list_models(task: str | None = None) -> list[str]:
    """Names of the models shipped with the package (optionally for one task).

    Parameters
    ----------
    task : {"completion", "denoising", "uncertainty"}, optional
        Only the models trained for this task.

    Returns
    -------
    list of str
        Names accepted by :func:`load_model`, sorted.

    Examples
    --------
    >>> import hyperspy_partialscan as hps
    >>> hps.list_models("completion")
    ['completion_default']
    >>> "denoising_default" in hps.list_models()
    True
    """
    names = []
    for cfg in sorted(WEIGHTS_DIR.glob("*.json")):
        if not cfg.with_suffix(".safetensors").exists() or not _is_plain_name(cfg.stem):
            continue
        if task is not None:
            try:
                config = json.loads(_read_config_bytes(cfg))
                if not isinstance(config, dict) or config.get("task") != task:
                    continue
            except (OSError, ValueError):
                continue
        names.append(cfg.stem)
    return names


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def load_model(name_or_path: str | os.PathLike | Model | None = None, task: str | None = None) -> Model:
    """Load a model by shipped name or path, safely (no code is unpickled).

    Parameters
    ----------
    name_or_path : str or pathlib.Path or Model, optional
        A shipped model name (:func:`list_models`), a ``.safetensors`` or
        ``.json`` path, or a folder holding one model. ``None`` loads the
        default model of ``task``.
    task : {"completion", "denoising", "uncertainty"}, optional
        Required task: a model trained for another task is rejected.

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        Unknown name (or a name with a folder part that is no path), a
        configuration over :data:`MAX_CONFIG_BYTES` or not valid JSON,
        weights and JSON that do not belong together (the SHA-256 of the
        weights file differs from the one the JSON records, or the JSON
        records none), unreadable or non-finite weights, a configuration that
        doesn't match the weights, an architecture trained for another task
        than the JSON says, or the wrong ``task``.
    FileNotFoundError
        Missing weights or configuration file.

    Examples
    --------
    >>> from hyperspy_partialscan.models import load_model
    >>> load_model("denoising_default", task="denoising").task
    'denoising'
    """
    if isinstance(name_or_path, Model):
        model = name_or_path
    else:
        if name_or_path is None:
            if task is None:
                raise ValueError("give a model name or path, or a task to load its default model")
            name_or_path = DEFAULT_MODELS[task]
        wpath, cpath = _resolve(name_or_path)
        raw = _read_config_bytes(cpath)
        digest = _sha256(wpath)
        key = (str(wpath.resolve()), digest, hashlib.sha256(raw).hexdigest())
        with _CACHE_LOCK:
            model = _CACHE.get(key)
            if model is None:
                model = _load(wpath, cpath, raw, digest)
                _CACHE[key] = model
    if task is not None and model.task != task:
        raise ValueError(f"model {model.name!r} is a {model.task} model, not a {task} model")
    return model


def _parse_config(cpath, raw, wpath, digest):
    """The checked configuration dict of a model (see :func:`load_model` for what is checked)."""
    try:
        config = json.loads(raw)
    except ValueError as err:  # UnicodeDecodeError and RecursionError-free JSON errors alike
        raise ValueError(f"model configuration {cpath} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"model configuration {cpath} is nested too deeply") from None
    if not isinstance(config, dict):
        raise ValueError(f"model configuration {cpath} is not a JSON object")
    for key in ("task", "architecture", "network"):
        if key not in config:
            raise ValueError(f"model configuration {cpath} lacks the required key {key!r}")
    expected = config.get("sha256")
    if expected != digest:
        why = "the JSON records no sha256" if not expected else "sha256 mismatch"
        raise ValueError(
            f"model {wpath}: weights and JSON do not belong together ({why}; the SHA-256 of the weights is "
            f"{digest[:12]}..., file corrupt, truncated or modified?)"
        )
    arch, task = config["architecture"], config["task"]
    if arch not in ARCHITECTURE_TASKS:
        raise ValueError(f"model configuration {cpath}: unknown architecture {arch!r}; "
                         f"known: {', '.join(ARCHITECTURE_TASKS)}")
    if task != ARCHITECTURE_TASKS[arch]:
        raise ValueError(f"model configuration {cpath}: a {arch} is a {ARCHITECTURE_TASKS[arch]} network, "
                         f"but the JSON says task {task!r}")
    if not isinstance(config["network"], dict) or not all(isinstance(k, str) for k in config["network"]):
        raise ValueError(f"model configuration {cpath}: 'network' must be an object of constructor arguments")
    return config


def _non_finite(state):
    """The names of the floating-point tensors of ``state`` with a NaN or inf ("a, b, c and 2 more"), or ""."""
    import torch

    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def _load(wpath, cpath, raw, digest):
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .networks import build_network

    config = _parse_config(cpath, raw, wpath, digest)
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(f"model weights {wpath} cannot be read as safetensors (corrupt or truncated?): "
                         f"{err}") from None
    bad = _non_finite(state)
    if bad:
        raise ValueError(f"model weights {wpath} hold non-finite values (NaN or inf) in {bad}")
    try:
        with torch.device("meta"):  # shapes only: a tampered config cannot allocate a huge network
            shapes = {k: tuple(v.shape) for k, v in build_network(config["architecture"], config["network"])
                      .state_dict().items()}
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"model configuration {cpath}: invalid network config: {err}") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != got:
        diff = sorted(set(shapes.items()) ^ set(got.items()))[:3]
        raise ValueError(f"model weights {wpath} do not fit the architecture in {cpath.name}: "
                         f"parameters differ, e.g. {diff}")
    net = build_network(config["architecture"], config["network"])
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"model weights {wpath} do not fit the architecture in {cpath.name}: {err}") from None
    net.eval()
    return Model(config.get("name", wpath.stem), config["task"], net, config, wpath, digest)


def save_model(network, path, *, task, architecture, extra=None):
    """Save ``network`` as ``path`` (.safetensors) with its JSON configuration.

    Both files are written to temporaries beside their targets and renamed
    over them only once both are complete (:func:`hyperspy_partialscan._atomic.atomic_paths`),
    so a failure leaves a previous model untouched; the JSON records the
    SHA-256 of the weights so that :func:`load_model` can tell whether the
    two belong together.

    Parameters
    ----------
    network : torch.nn.Module
        Must have a ``config`` dict of constructor arguments.
    path : str or pathlib.Path
        Output weights path; the ``.json`` is written beside it.
    task, architecture : str
    extra : dict, optional
        Provenance to record (training data, iterations, validation figures...).

    Returns
    -------
    pathlib.Path
        The weights path.

    Raises
    ------
    ValueError
        The weights hold NaN or inf (nothing is written).

    Examples
    --------
    >>> import tempfile
    >>> from hyperspy_partialscan.models.networks import DenoisingUNet
    >>> path = save_model(DenoisingUNet(width=4), Path(tempfile.mkdtemp()) / "dn.safetensors",
    ...                   task="denoising", architecture="DenoisingUNet")
    >>> load_model(path).task
    'denoising'
    """
    from safetensors.torch import save_file

    from .._atomic import atomic_paths

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    bad = _non_finite(state)
    if bad:  # load_model would refuse it: keep any previous model instead
        raise ValueError(f"refusing to save {path}: the network's weights hold non-finite values (NaN or inf) in "
                         f"{bad} (training diverged?)")
    config = {"name": path.stem, "task": task, "architecture": architecture, "network": dict(network.config)}
    config.update(extra or {})
    with atomic_paths([path, path.with_suffix(".json")]) as (wtmp, ctmp):
        save_file(state, str(wtmp))
        config["sha256"] = _sha256(wtmp)
        ctmp.write_text(json.dumps(config, indent=2, default=str))
        # safetensors writes owner-only (0600) files; give the weights the permissions the JSON got from the umask
        os.chmod(wtmp, os.stat(ctmp).st_mode & 0o777)
    return path
