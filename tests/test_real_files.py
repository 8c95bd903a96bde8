"""The pipeline on real microscopy files from ../shared/data (skipped when absent)."""

import inspect

import numpy as np
import pytest
from hyperspy.signals import LazySignal2D, Signal2D
from pshelpers import array_of, assert_tree_equal, axes_summary, metadata_without_partial_scan

import hyperspy_partialscan as hp
from hyperspy_partialscan.io import default_data_dir
from hyperspy_partialscan.signals import LazyPartialScan2D, PartialScan2D

# (file relative to the data folder, hs.load keyword arguments, index in a returned list, crop)
FILES = {
    "dm3": ("train/stem_haadf_rsciio_multi_signal.dm3", {}, 0, None),
    "emd": ("train/stem_haadf_Au_nanoparticles_temul.emd", {}, None, None),
    "ser": ("val/tem_bf_tia_needle_tip_rsciio_1.ser", {}, None, None),
    "mrc": ("train/stem_haadf_tiltseries_needle_etspy.mrc", {}, None, 3),  # a 77-frame stack: 3 frames
    "hspy-hdf5": ("train/tem_hologram_Fe_needle_holospy.hdf5", {"file_format": "HSPY"}, None, None),
}


def _load(key, lazy):
    import hyperspy.api as hs

    name, kwargs, index, n_frames = FILES[key]
    path = default_data_dir() / name
    if not path.is_file():
        pytest.skip(f"sample data absent: {path} not found (set HYPERSPY_PARTIALSCAN_DATA or add ../shared/data)")
    kwargs = dict(kwargs)
    if "file_format" in kwargs and "file_format" not in inspect.signature(hs.load).parameters:
        kwargs["reader"] = kwargs.pop("file_format")  # HyperSpy < 2.4
    s = hs.load(path, lazy=lazy, **kwargs)
    if isinstance(s, list):
        s = s[index]
    assert s.axes_manager.signal_dimension == 2
    if n_frames is not None:
        s = s.inav[:n_frames]
    if max(s.axes_manager.signal_shape) > 256:
        s = s.isig[:256, :256]  # crop big frames for speed
    return s


@pytest.mark.filterwarnings("ignore:Loading old file version")  # the holospy file predates HyperSpy 1.7
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("key", list(FILES))
def test_real_file_pipeline(key, lazy):
    s = _load(key, lazy)
    assert s._lazy is lazy
    before = array_of(s).copy()
    p = hp.to_partial_scan(s, "spiral", 0.1, seed=0)
    c = hp.complete_partial_scan(p, "linear", keep_measured=True)
    assert type(c) is (LazySignal2D if lazy else Signal2D)
    for out in (p, c):
        assert type(out) in (LazyPartialScan2D, PartialScan2D, LazySignal2D, Signal2D) and out._lazy is lazy
        assert out.data.dtype == np.float32
        assert axes_summary(out) == axes_summary(s)
        assert_tree_equal(out.original_metadata, s.original_metadata)
        assert_tree_equal(metadata_without_partial_scan(out), metadata_without_partial_scan(s))
    np.testing.assert_array_equal(array_of(s), before)  # input untouched
    partial, completed = array_of(p), array_of(c)
    sampled = np.isfinite(partial)
    assert 0.08 < sampled.mean() < 0.12
    np.testing.assert_array_equal(partial[sampled], before[sampled].astype(np.float32))
    assert np.isfinite(completed).all()
    np.testing.assert_array_equal(completed[sampled], partial[sampled])
    # a sensible completion: within the data's range and closer to the truth than the mean
    truth = before.astype(np.float64)
    tol = 1e-3 * np.ptp(truth)
    assert truth.min() - tol <= completed.min() and completed.max() <= truth.max() + tol
    assert np.mean((completed - truth) ** 2) < np.mean((truth.mean() - truth) ** 2)
