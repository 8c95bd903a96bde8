# Copyright 2025 The hyperspy_partialscan developers
#
# This file is part of hyperspy_partialscan.
#
# hyperspy_partialscan is free software: you can redistribute it and/or modify
# it under the terms of the GNU General Public License as published by
# the Free Software Foundation, either version 3 of the License, or
# (at your option) any later version.
#
# hyperspy_partialscan is distributed in the hope that it will be useful,
# but WITHOUT ANY WARRANTY; without even the implied warranty of
# MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE. See the
# GNU General Public License for more details.
#
# You should have received a copy of the GNU General Public License
# along with hyperspy_partialscan. If not, see <https://www.gnu.org/licenses/>.
"""Read 2-D image frames from microscopy files for training and evaluation.

All readers return real ``float32`` arrays of shape ``(rows, columns)``
(numpy order). Stacks are split into their frames, RGB images are averaged
over their colour channels, and data are otherwise never modified: frames
containing non-finite values are skipped with a warning, and complex data are
rejected.

HyperSpy is imported lazily, inside the functions that need it.
"""

import csv
import glob
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ._validation import check_choice, check_number

__all__ = ["read_frames", "manifest_frames", "default_data_dir"]

_log = logging.getLogger(__name__)

_RASTER_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
_TIFF_EXTS = {".tif", ".tiff"}
_HDF5_EXTS = {".h5", ".hdf5"}
# Formats read through ``hyperspy.api.load`` when searching folders.
_HS_EXTS = {".dm3", ".dm4", ".emd", ".emi", ".ser", ".mrc", ".hspy", ".blo"}
IMAGE_EXTENSIONS = frozenset(_RASTER_EXTS | _TIFF_EXTS | _HDF5_EXTS | _HS_EXTS)
"""File extensions picked up when a folder is searched for images."""

_SER_RE = re.compile(r"^(?P<stem>.+)_\d+$")


def default_data_dir():
    """Return the directory holding the sample data.

    Returns
    -------
    pathlib.Path
        The value of the environment variable ``HYPERSPY_PARTIALSCAN_DATA``
        if it is set and not empty; else the first existing of
        ``../shared/data`` seen from the current directory (the repository
        root, for the training and benchmark commands) and
        ``<repository root>/../shared/data`` seen from this file (an editable
        install); else the former. The path is returned even if it does not
        exist.
    """
    env = os.environ.get("HYPERSPY_PARTIALSCAN_DATA")
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd().resolve().parent / "shared" / "data",
                  Path(__file__).resolve().parents[2] / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def read_frames(sources, *, min_size=64, max_frames_per_file=None, on_error="raise"):
    """Read the 2-D frames of image files.

    Parameters
    ----------
    sources : str or os.PathLike or list of those
        File paths, folders (searched recursively for files whose extension
        is in :data:`IMAGE_EXTENSIONS`) or glob patterns (``*``, ``?`` and
        ``[`` are glob characters; ``**`` matches recursively). Explicitly
        named files are read whatever their extension. Paths met more than
        once are read once, and a TIA ``x_1.ser`` file is skipped when its
        ``x.emi`` partner is also among the files (the ``.emi`` loads it).
    min_size : int, default 64
        Frames with fewer rows or columns than this are skipped.
    max_frames_per_file : int, optional
        If given, at most this many frames are kept from each file, taken at
        evenly spaced positions through the file's frames (all frames of a
        file that has fewer).
    on_error : {"raise", "warn"}, default "raise"
        What to do with a file that cannot be read (:class:`OSError`) or that
        holds complex or non-numeric data (:class:`ValueError`): raise, or
        emit a warning and go on with the next file.

    Returns
    -------
    list of numpy.ndarray
        The frames, each a 2-D ``float32`` array with only finite values, in
        the order of ``sources`` (folder and glob matches sorted by path).
        Stacks are split into their frames along the navigation axes, RGB(A)
        images are averaged over their three colour channels. Frames that
        contain any non-finite value are skipped with a warning; data are
        never altered otherwise.

    Raises
    ------
    FileNotFoundError
        If a path does not exist or a glob pattern matches nothing.
    OSError
        If a file cannot be read; the message names the file.
    ValueError
        If a file holds complex (or non-numeric) data; the message names the
        file. Also for invalid arguments.

    Notes
    -----
    Reading strategy by extension: ``.png .jpg .jpeg .bmp .gif`` with
    imageio; ``.tif .tiff`` with tifffile (first series; its ``S`` axis is
    the colour axis); ``.h5 .hdf5`` with ``hyperspy.api.load(reader="HSPY")``
    when the file is a HyperSpy file, otherwise with h5py, taking the largest
    2-D or 3-D real numeric dataset (frames along its first axis); anything
    else with ``hyperspy.api.load(path, lazy=False)``, keeping every signal
    with two signal dimensions.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, tifffile
    >>> from hyperspy_partialscan.io import read_frames
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "scan.tif"
    >>> tifffile.imwrite(path, np.arange(96 * 80, dtype=np.uint16).reshape(96, 80))
    >>> frames = read_frames([path])
    >>> len(frames), frames[0].shape, frames[0].dtype
    (1, (96, 80), dtype('float32'))
    """
    check_choice("on_error", on_error, ("raise", "warn"))
    check_number("max_frames_per_file", max_frames_per_file, low=1, integer=True, allow_none=True)
    frames = []
    for path in _expand_sources(sources):
        try:
            arrays = _read_file(path)
            file_frames = _split_frames(arrays, str(path))
        except (OSError, ValueError) as exc:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
            continue
        if max_frames_per_file is not None and len(file_frames) > max_frames_per_file:
            keep = np.linspace(0, len(file_frames) - 1, max_frames_per_file)
            file_frames = [file_frames[i] for i in np.unique(keep.round().astype(int))]
        for i, frame in file_frames:
            label = f"{path}[{i}]"
            if min(frame.shape) < min_size:
                _log.info(
                    "skipping %s: %s smaller than min_size=%d", label, frame.shape, min_size
                )
                continue
            frame = _checked_float32(frame, label)
            if frame is not None:
                frames.append(frame)
    return frames


def manifest_frames(data_dir, split, *, modalities=None):
    """Read the frames of the sample-data files listed in ``MANIFEST.tsv``.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Folder holding ``MANIFEST.tsv`` and the files it lists (see
        :func:`default_data_dir`).
    split : {"train", "val"}
        Which rows to read.
    modalities : str or list of str, optional
        If given, only rows whose ``modality`` column contains one of these
        strings (case-insensitive) are read, e.g. ``["HAADF", "DM3"]``.

    Returns
    -------
    list of tuple (str, numpy.ndarray)
        ``(label, frame)`` pairs in manifest order. ``label`` is the row's
        ``file`` column, followed by ``[i]`` for frame ``i`` when the row's
        file holds more than one frame. Frames are 2-D ``float32`` arrays;
        frames with non-finite values are skipped with a warning.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` or its ``MANIFEST.tsv`` does not exist.
    OSError
        If a listed file cannot be read; the message names the file.
    ValueError
        For an unknown ``split`` or ``loader_hint``, or complex data.

    Notes
    -----
    Each row is read as its ``loader_hint`` column says: ``hs``:
    ``hyperspy.api.load(path)`` keeping every 2-D signal; ``hs:N``: element
    ``N`` of the list it returns; ``hs:READER``: ``reader=READER``;
    ``h5:KEY``: the h5py dataset ``KEY``; ``tif``: tifffile; ``img``:
    imageio, averaging RGB channels. For a TIA row (``x.emi + x_1.ser``) the
    first file named is loaded.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    data_dir = Path(data_dir)
    manifest = data_dir / "MANIFEST.tsv"
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"sample data folder {data_dir} not found; set HYPERSPY_PARTIALSCAN_DATA "
            "or pass the folder holding MANIFEST.tsv"
        )
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: {data_dir} is not a sample data folder")
    if isinstance(modalities, str):
        modalities = [modalities]
    wanted = None if modalities is None else [m.lower() for m in modalities]

    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for row in rows:
        if row["split"].strip() != split:
            continue
        if wanted is not None and not any(m in row["modality"].lower() for m in wanted):
            continue
        file_label = row["file"].strip()
        path = data_dir / file_label.split(" + ")[0].strip()
        arrays = _read_hinted(path, row["loader_hint"].strip())
        file_frames = _split_frames(arrays, str(path))
        for i, frame in file_frames:
            label = file_label if len(file_frames) == 1 else f"{file_label}[{i}]"
            frame = _checked_float32(frame, label)
            if frame is not None:
                out.append((label, frame))
    return out


# --------------------------------------------------------------------------
# helpers


def _expand_sources(sources):
    """Return the list of files named by ``sources`` (see read_frames)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = []
    for src in sources:
        src_str = os.fspath(src)
        if any(c in src_str for c in "*?[") and not os.path.exists(src_str):
            matches = sorted(glob.glob(os.path.expanduser(src_str), recursive=True))
            if not matches:
                raise FileNotFoundError(f"glob pattern {src_str!r} matches no file")
            for m in matches:
                files.extend(_folder_files(Path(m)) if os.path.isdir(m) else [Path(m)])
            continue
        path = Path(src_str).expanduser()
        if path.is_dir():
            found = _folder_files(path)
            if not found:
                warnings.warn(f"no image files found in folder {path}", stacklevel=3)
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")

    # read each file once; skip x_N.ser when x.emi is read too
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    emis = {f.resolve().with_suffix("") for f in unique if f.suffix.lower() == ".emi"}
    result = []
    for f in unique:
        m = _SER_RE.match(f.stem)
        if f.suffix.lower() == ".ser" and m and f.resolve().parent / m["stem"] in emis:
            _log.debug("skipping %s: read through its .emi partner", f)
            continue
        result.append(f)
    return result


def _folder_files(folder):
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def _read_file(path):
    """Read ``path`` into a list of real-or-complex arrays ``(..., rows, cols)``.

    Any failure of the underlying reader is raised as OSError naming the file.
    """
    ext = path.suffix.lower()
    try:
        if ext in _RASTER_EXTS:
            return [_read_raster(path)]
        if ext in _TIFF_EXTS:
            return [_read_tiff(path)]
        if ext in _HDF5_EXTS:
            if _is_hyperspy_h5(path):
                return _read_hyperspy(path, reader="HSPY")
            return [_read_h5_largest(path)]
        return _read_hyperspy(path)
    except _DataError:
        raise
    except Exception as exc:
        raise OSError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _read_hinted(path, hint):
    """Read ``path`` as a manifest ``loader_hint`` says."""
    kind, _, arg = hint.partition(":")
    try:
        if kind == "hs":
            if not arg:
                return _read_hyperspy(path)
            if arg.isdigit():
                return _read_hyperspy(path, index=int(arg))
            return _read_hyperspy(path, reader=arg)
        if kind == "h5":
            import h5py

            with h5py.File(path, "r") as fh:
                return [fh[arg][()]]
        if kind == "tif":
            return [_read_tiff(path)]
        if kind == "img":
            return [_read_raster(path)]
    except _DataError:
        raise
    except Exception as exc:
        raise OSError(
            f"cannot read {path} (loader_hint {hint!r}): {type(exc).__name__}: {exc}"
        ) from exc
    raise ValueError(f"unknown loader_hint {hint!r} for {path}")


class _DataError(ValueError):
    """A file was read but holds data that cannot be used (e.g. complex)."""


def _rgb_to_gray(arr, channel_axis=-1):
    """Average the first three channels (RGB) or take the first (gray + alpha)."""
    arr = np.moveaxis(arr, channel_axis, -1)
    if arr.shape[-1] >= 3:
        return arr[..., :3].mean(axis=-1)
    return arr[..., 0]


def _read_raster(path):
    import imageio.v3 as iio

    arr = np.asarray(iio.imread(path))
    # (rows, cols) gray; (rows, cols, 2|3|4) LA/RGB/RGBA; (n, rows, cols[, c]) frames
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] in (2, 3, 4)):
        arr = _rgb_to_gray(arr)
    return arr


def _read_tiff(path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.series) > 1:
            _log.debug("%s has %d series; reading the first", path, len(tif.series))
        series = tif.series[0]
        arr, axes = series.asarray(), series.axes
    if "S" in axes:  # samples (colour) axis
        arr = _rgb_to_gray(arr, channel_axis=axes.index("S"))
        axes = axes.replace("S", "")
    if "Y" in axes and "X" in axes:
        arr = np.moveaxis(arr, [axes.index("Y"), axes.index("X")], [-2, -1])
    return arr


def _is_hyperspy_h5(path):
    import h5py

    with h5py.File(path, "r") as fh:
        fmt = fh.attrs.get("file_format", "")
    if isinstance(fmt, bytes):
        fmt = fmt.decode(errors="replace")
    return str(fmt).lower() == "hyperspy"


def _read_h5_largest(path):
    import h5py

    real, complex_ = [], []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3):
            if obj.dtype.kind in "biuf":
                real.append((obj.size, name))
            elif obj.dtype.kind == "c":
                complex_.append(name)

    with h5py.File(path, "r") as fh:
        fh.visititems(visit)
        if not real:
            if complex_:
                raise _DataError(
                    f"{path}: complex data (dataset {complex_[0]!r}) are not supported"
                )
            raise OSError("no 2-D or 3-D numeric dataset found")
        name = max(real)[1]
        _log.debug("%s: reading dataset %r", path, name)
        return fh[name][()]


def _read_hyperspy(path, *, reader=None, index=None):
    """``hyperspy.api.load`` ``path``; return the data of its 2-D signals."""
    import inspect

    import hyperspy.api as hs

    try:
        from rsciio.utils.rgb import is_rgbx, rgbx2regular_array
    except ImportError:  # rosettasciio < 0.12
        from rsciio.utils.rgb_tools import is_rgbx, rgbx2regular_array

    kwargs = {"lazy": False}
    if reader is not None:
        # HyperSpy >= 2.4 renamed ``reader`` to ``file_format``
        key = "file_format" if "file_format" in inspect.signature(hs.load).parameters else "reader"
        kwargs[key] = reader
    signals = hs.load(str(path), **kwargs)
    if not isinstance(signals, list):
        signals = [signals]
    if index is not None:
        if not -len(signals) <= index < len(signals):
            raise _DataError(f"{path}: signal {index} asked for, but the file holds {len(signals)} signal(s): "
                             f"{_signal_list(signals)}; pick one of these indices")
        signals = [signals[index]]
    arrays = []
    for s in signals:
        data = np.asarray(s.data)
        if is_rgbx(data):
            arrays.append(_rgb_to_gray(rgbx2regular_array(data)))
            _log.info("%s: RGB(A) signal %r averaged over its R, G and B channels to grey levels", path,
                         s.metadata.get_item("General.title", ""))
        elif s.axes_manager.signal_dimension == 2:
            arrays.append(data)
        else:
            _log.warning("%s: skipping %s (not a 2-D image signal)", path, s)
    if not arrays:
        warnings.warn(f"{path} holds no 2-D image signal", stacklevel=4)
    return arrays


def _signal_list(signals):
    """``[0] 'title' (Signal2D), [1] ...``: how to name the signals of a file so that one can be picked."""
    return ", ".join(f"[{i}] {s.metadata.get_item('General.title', '')!r} ({type(s).__name__})"
                     for i, s in enumerate(signals))


def _split_frames(arrays, name):
    """Split arrays ``(..., rows, cols)`` into ``[(index, 2-D frame), ...]``.

    Raises ValueError for complex or non-numeric data.
    """
    frames = []
    for arr in arrays:
        arr = np.asarray(arr)
        if np.iscomplexobj(arr):
            raise _DataError(f"{name}: complex data ({arr.dtype}) are not supported")
        if arr.dtype.kind not in "biuf":
            raise _DataError(f"{name}: unsupported data type {arr.dtype}")
        if arr.ndim < 2:
            raise _DataError(f"{name}: expected image data, got shape {arr.shape}")
        arr = arr.reshape(-1, *arr.shape[-2:])
        frames.extend(arr)
    return list(enumerate(frames))


def _checked_float32(frame, label):
    """Return ``frame`` as a float32 copy, or None (with a warning) if it has non-finite values."""
    out = np.array(frame, dtype=np.float32)
    if not np.isfinite(out).all():
        n_bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        warnings.warn(
            f"skipping {label}: {n_bad} of {out.size} pixels are not finite (as float32)",
            stacklevel=3,
        )
        return None
    return out
