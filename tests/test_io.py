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
"""Tests for hyperspy_partialscan.io (synthetic files + the shared sample data)."""

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from hyperspy_partialscan.io import default_data_dir, manifest_frames, read_frames

# --------------------------------------------------------------------------
# real sample data (skipped when ../shared/data is absent)


def _data_dir():
    data_dir = default_data_dir()
    if not (data_dir / "MANIFEST.tsv").is_file():
        pytest.skip(f"../shared/data not present: no MANIFEST.tsv in {data_dir}")
    return data_dir


def _manifest_rows(data_dir, split):
    with open(data_dir / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if r["split"] == split]


def _group_by_row(pairs):
    """{manifest file column: [frames]} from manifest_frames output."""
    groups = {}
    for label, frame in pairs:
        groups.setdefault(re.sub(r"\[\d+\]$", "", label), []).append(frame)
    return groups


@pytest.fixture(scope="module", params=["train", "val"])
def split_frames(request):
    data_dir = _data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HyperSpy deprecation / metadata warnings
        pairs = manifest_frames(data_dir, request.param)
    return request.param, _manifest_rows(data_dir, request.param), pairs


def test_manifest_frames_cover_every_row(split_frames):
    split, rows, pairs = split_frames
    assert rows, f"no {split} rows in the manifest"
    groups = _group_by_row(pairs)
    assert set(groups) == {r["file"] for r in rows}
    for label, frame in pairs:
        assert isinstance(label, str)
        assert frame.ndim == 2, label
        assert frame.dtype == np.float32, label
        assert min(frame.shape) >= 64, label
        assert np.isfinite(frame).all(), label


def test_manifest_frame_shapes_match_manifest(split_frames):
    split, rows, pairs = split_frames
    groups = _group_by_row(pairs)
    for row in rows:
        # the manifest's shape column is numpy order: [frames x] rows x columns
        dims = tuple(int(d) for d in row["shape"].split("x"))
        frames = groups[row["file"]]
        assert len(frames) == int(np.prod(dims[:-2], dtype=int)), row["file"]
        for frame in frames:
            assert frame.shape == dims[-2:], row["file"]


def test_every_format_is_covered():
    data_dir = _data_dir()
    files = {r["file"] for s in ("train", "val") for r in _manifest_rows(data_dir, s)}
    exts = {Path(f.split(" + ")[0]).suffix for f in files}
    assert {".dm3", ".emd", ".emi", ".mrc", ".tif", ".png", ".jpg", ".h5", ".hdf5"} <= exts


def test_manifest_stack_labels_and_modalities():
    data_dir = _data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = manifest_frames(data_dir, "train", modalities="tilt series")
    labels = [label for label, _ in pairs]
    assert len(labels) == 77
    assert labels[0] == "train/stem_haadf_tiltseries_needle_etspy.mrc[0]"
    assert labels[-1] == "train/stem_haadf_tiltseries_needle_etspy.mrc[76]"
    pairs = manifest_frames(data_dir, "val", modalities=["nothing like this"])
    assert pairs == []


def test_read_frames_folder_matches_manifest():
    """A folder read (with .emi/.ser de-duplication) gives the manifest's frames."""
    data_dir = _data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = manifest_frames(data_dir, "val")
        frames = read_frames(data_dir / "val")
    assert len(frames) == len(expected)
    key = lambda a: (a.shape, float(a.astype(np.float64).sum()))  # noqa: E731
    assert sorted(map(key, frames)) == sorted(key(f) for _, f in expected)


def test_read_frames_emi_ser_pair_read_once(tmp_path):
    data_dir = _data_dir()
    for name in ("tem_bf_tia_needle_tip_rsciio.emi", "tem_bf_tia_needle_tip_rsciio_1.ser"):
        (tmp_path / name).symlink_to(data_dir / "val" / name)
    assert len(read_frames(tmp_path)) == 1
    assert len(read_frames(str(tmp_path / "*"))) == 1


def test_manifest_frames_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        manifest_frames(tmp_path / "absent", "train")
    with pytest.raises(FileNotFoundError, match="MANIFEST.tsv"):
        manifest_frames(tmp_path, "train")


# --------------------------------------------------------------------------
# synthetic files


@pytest.fixture
def image_folder(tmp_path):
    import h5py
    import imageio.v3 as iio
    import tifffile

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    iio.imwrite(folder / "gray.png", rng.integers(0, 255, (70, 90), dtype=np.uint8))
    rgb = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    iio.imwrite(folder / "sub" / "rgb.png", rgb)
    stack = rng.random((3, 64, 72), dtype=np.float32)
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(folder / "small.tif", rng.random((32, 32), dtype=np.float32))
    with h5py.File(folder / "plain.h5", "w") as fh:
        fh["tiny"] = np.zeros((8, 8))
        fh["group/stack"] = rng.integers(0, 1000, (2, 66, 68), dtype=np.uint32)
    np.save(folder / "ignored.npy", np.zeros((100, 100)))
    return folder, rgb


def test_read_frames_folder(image_folder):
    folder, rgb = image_folder
    frames = read_frames(folder)
    # gray.png 1 + stack.tif 3 + plain.h5 2 + sub/rgb.png 1; small.tif and .npy skipped
    shapes = sorted(f.shape for f in frames)
    expected = [(70, 90), (64, 72), (64, 72), (64, 72), (66, 68), (66, 68), (80, 100)]
    assert shapes == sorted(expected)
    assert all(f.dtype == np.float32 and f.ndim == 2 for f in frames)
    (rgb_frame,) = [f for f in frames if f.shape == (80, 100)]
    np.testing.assert_allclose(rgb_frame, rgb.mean(axis=-1), rtol=1e-6)
    assert len(read_frames(folder, min_size=16)) == 8
    assert len(read_frames(folder, max_frames_per_file=1)) == 4


def test_read_frames_glob_and_list(image_folder):
    folder, _ = image_folder
    assert len(read_frames(str(folder / "*.png"))) == 1
    assert len(read_frames(str(folder / "**" / "*.png"))) == 2
    frames = read_frames([folder / "gray.png", str(folder / "stack.tif"), folder / "gray.png"])
    assert [f.shape for f in frames] == [(70, 90)] + [(64, 72)] * 3
    with pytest.raises(FileNotFoundError):
        read_frames(str(folder / "*.none"))
    with pytest.raises(FileNotFoundError):
        read_frames(folder / "missing.png")


def test_read_frames_hyperspy_file(tmp_path):
    import hyperspy.api as hs

    data = np.arange(2 * 70 * 80, dtype=np.int16).reshape(2, 70, 80)
    hs.signals.Signal2D(data).save(tmp_path / "stack.hspy")
    hs.signals.Signal2D(data[0]).save(tmp_path / "single.hdf5", file_format="HSPY")
    frames = read_frames([tmp_path / "stack.hspy", tmp_path / "single.hdf5"])
    assert len(frames) == 3
    np.testing.assert_array_equal(frames[1], data[1].astype(np.float32))
    np.testing.assert_array_equal(frames[2], data[0].astype(np.float32))


def test_read_frames_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"definitely not a png" * 10)
    with pytest.raises(OSError, match="corrupt.png"):
        read_frames(bad)
    bad_dm3 = tmp_path / "corrupt.dm3"
    bad_dm3.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(OSError, match="corrupt.dm3"):
        read_frames(bad_dm3)
    unknown = tmp_path / "garbage.xyz"  # unknown extension: hyperspy.api.load fails
    unknown.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(OSError, match="garbage.xyz"):
        read_frames(unknown)


def test_read_frames_on_error_warn(image_folder):
    folder, _ = image_folder
    (folder / "corrupt.tif").write_bytes(b"II*\x00broken")
    with pytest.raises(OSError, match="corrupt.tif"):
        read_frames(folder)
    with pytest.warns(UserWarning, match="corrupt.tif"):
        frames = read_frames(folder, on_error="warn")
    assert len(frames) == 7
    with pytest.raises(ValueError, match="^on_error must be 'raise' or 'warn', not 'ignore'"):
        read_frames(folder, on_error="ignore")
    with pytest.raises(ValueError, match="^max_frames_per_file must be an integer >= 1 or None, not 2.5"):
        read_frames(folder, max_frames_per_file=2.5)


def test_read_frames_complex_rejected(tmp_path):
    import h5py
    import tifffile

    cplx = (np.ones((70, 70)) + 1j).astype(np.complex64)
    tifffile.imwrite(tmp_path / "wave.tif", cplx)
    with pytest.raises(ValueError, match="wave.tif.*complex"):
        read_frames(tmp_path / "wave.tif")
    with h5py.File(tmp_path / "wave.h5", "w") as fh:
        fh["psi"] = cplx
    with pytest.raises(ValueError, match="wave.h5.*complex"):
        read_frames(tmp_path / "wave.h5")
    with pytest.warns(UserWarning, match="complex"):
        assert read_frames(tmp_path, on_error="warn") == []


def test_read_frames_skips_nonfinite_frames(tmp_path):
    import tifffile

    stack = np.ones((3, 70, 70), dtype=np.float32)
    stack[1, 5, 5] = np.nan
    stack[2, :, :] = np.inf
    tifffile.imwrite(tmp_path / "nan.tif", stack, photometric="minisblack")
    with pytest.warns(UserWarning, match="not finite"):
        frames = read_frames(tmp_path / "nan.tif")
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0], stack[0])


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERSPY_PARTIALSCAN_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("HYPERSPY_PARTIALSCAN_DATA")
    # ../shared/data seen from the current directory (a repository root) comes first
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert default_data_dir() == (tmp_path / "shared" / "data").resolve()
    # without it: next to the source tree (editable install), else the cwd-relative path
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere" / "deep")
    import hyperspy_partialscan.io as io_module

    beside_source = Path(io_module.__file__).resolve().parents[2] / "shared" / "data"
    fallback = (tmp_path / "elsewhere" / "shared" / "data").resolve()
    assert default_data_dir() == (beside_source if beside_source.is_dir() else fallback)


def test_manifest_index_out_of_range_names_the_signals(tmp_path):
    """A loader hint picking a signal the file does not hold: the message lists the signals to pick from."""
    import hyperspy.api as hs

    s = hs.signals.Signal2D(np.ones((70, 70), dtype=np.float32))
    s.metadata.General.title = "HAADF"
    s.save(tmp_path / "one.hspy")
    (tmp_path / "MANIFEST.tsv").write_text("file\tsplit\tmodality\tloader_hint\none.hspy\ttrain\tHAADF\ths:3\n")
    before = (tmp_path / "one.hspy").read_bytes()
    with pytest.raises(ValueError, match=r"signal 3 asked for, but the file holds 1 signal\(s\): \[0\] 'HAADF'"):
        manifest_frames(tmp_path, "train")
    assert (tmp_path / "one.hspy").read_bytes() == before


def test_read_frames_reports_skipped_signals(tmp_path, monkeypatch, caplog):
    """A 1-D signal beside the image is skipped with a warning (not only at debug level); RGB is noted."""
    import logging

    import hyperspy.api as hs

    image = hs.signals.Signal2D(np.ones((70, 70), dtype=np.float32))
    rgb = hs.signals.Signal1D(np.full((70, 70, 3), 9, dtype=np.uint8))
    rgb.change_dtype("rgb8")
    spectrum = hs.signals.Signal1D(np.arange(8.0))
    (tmp_path / "multi.dm4").write_bytes(b"x")
    monkeypatch.setattr(hs, "load", lambda *a, **k: [spectrum, image, rgb])
    with caplog.at_level(logging.INFO, logger="hyperspy_partialscan.io"):
        frames = read_frames(tmp_path / "multi.dm4")
    assert len(frames) == 2 and float(frames[1][0, 0]) == 9.0
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not a 2-D image signal" in warned[0].getMessage()
    assert any("averaged over its R, G and B" in r.getMessage() for r in caplog.records)
