"""The frame-batch engine: navigation chunking, batched map_frames, tiling and blending."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest

from hyperspy_partialscan.engine import Tiler, map_frames, navigation_chunks


@pytest.mark.parametrize(
    "shape, batch, expected",
    [
        ((64, 48), 16, (64, 48)),
        ((5, 64, 48), 2, (2, 64, 48)),
        ((5, 64, 48), 16, (5, 64, 48)),
        ((2, 3, 8, 8), 4, (1, 3, 8, 8)),
        ((2, 3, 8, 8), 6, (2, 3, 8, 8)),
        ((2, 3, 8, 8), 2, (1, 2, 8, 8)),
        ((2, 3, 8, 8), 0, (1, 1, 8, 8)),
        ((4, 5, 6, 8, 8), 60, (2, 5, 6, 8, 8)),
        ((4, 5, 6, 8, 8), 120, (4, 5, 6, 8, 8)),
        ((4, 5, 6, 8, 8), 12, (1, 2, 6, 8, 8)),
    ],
)
def test_navigation_chunks(shape, batch, expected):
    assert navigation_chunks(shape, batch) == expected


class _Counter:
    """Batch function recording its calls; returns frame + 1000 * flat index (checks the indices)."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, frames, indices):
        with self.lock:
            self.calls.append((frames.shape, tuple(int(i) for i in indices)))
        return frames + 1000.0 * np.asarray(indices, np.float32)[:, None, None]


def _data(nav_shape, frame=(5, 7)):
    n = int(np.prod(nav_shape)) if nav_shape else 1
    return np.arange(n * frame[0] * frame[1], dtype=np.float32).reshape(tuple(nav_shape) + frame)


@pytest.mark.parametrize("lazy_input", [False, True])
@pytest.mark.parametrize("batch, n_calls", [(1, 6), (2, 4), (3, 2), (4, 2), (6, 1), (100, 1)])
def test_map_frames_one_call_per_block(lazy_input, batch, n_calls):
    data = _data((2, 3))
    inp = da.from_array(data, chunks=(1, 1, 2, 7)) if lazy_input else data  # odd input chunks (frames split)
    f = _Counter()
    out = map_frames(inp, f, batch_size=batch, with_indices=True)
    assert f.calls == []  # lazy: nothing runs before compute
    with dask.config.set(scheduler="sync"):
        res = out.compute()
    assert len(f.calls) == n_calls  # one call per block, not per frame
    assert sorted(i for _, idx in f.calls for i in idx) == list(range(6))
    for shape, idx in f.calls:
        assert shape == (len(idx), 5, 7)  # whole frames, batched
    flat = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(res, data + 1000.0 * flat[..., None, None])
    assert res.dtype == np.float32


def test_map_frames_without_navigation():
    data = _data(())
    f = _Counter()
    res = map_frames(data, f, with_indices=True).compute(scheduler="sync")
    assert f.calls == [((1, 5, 7), (0,))]
    np.testing.assert_array_equal(res, data)


def test_map_frames_without_indices_and_dtype():
    data = _data((4,))
    calls = []

    def func(frames):
        calls.append(len(frames))
        return frames * 2

    out = map_frames(data, func, batch_size=2, dtype=np.float64)
    assert out.dtype == np.float64
    res = out.compute(scheduler="sync")
    assert res.dtype == np.float64
    assert calls == [2, 2]
    np.testing.assert_array_equal(res, data * 2)


def test_map_frames_names_deterministic():
    data = _data((2, 3))
    f = _Counter()
    a = map_frames(data, f, name="op", token=("x", 1))
    assert a.name.startswith("op-")
    assert a.name == map_frames(data.copy(), f, name="op", token=("x", 1)).name
    assert a.name != map_frames(data, f, name="op", token=("x", 2)).name
    assert a.name != map_frames(data + 1, f, name="op", token=("x", 1)).name
    assert a.name != map_frames(data, f, name="op", token=("x", 1), batch_size=1).name


# ------------------------------------------------------------------ Tiler


@pytest.mark.parametrize("shape", [(300, 200), (128, 128), (100, 90), (129, 500), (257, 257)])
def test_tiler_windows_cover_frame(shape):
    t = Tiler(128, 16)
    cover = np.zeros(shape, int)
    for r, c, h, w in t.windows(shape):
        assert 0 <= r and r + h <= shape[0] and 0 <= c and c + w <= shape[1]
        assert h == min(128, shape[0]) and w == min(128, shape[1])
        cover[r : r + h, c : c + w] += 1
    assert (cover >= 1).all()
    # neighbouring tiles overlap by at least the blending width
    for axis in (0, 1):
        starts = sorted({w[axis] for w in t.windows(shape)})
        size = min(128, shape[axis])
        for a, b in zip(starts[:-1], starts[1:]):
            assert a + size - b >= 16


@pytest.mark.parametrize("shape", [(300, 200), (128, 128), (257, 513)])
def test_tiler_merge_of_identity_tiles_is_exact(shape):
    t = Tiler(128, 16)
    frame = np.random.default_rng(0).random(shape).astype(np.float32)
    tiles = t.split(frame)
    assert len(tiles) == len(t.windows(shape))
    np.testing.assert_array_equal(t.merge(tiles, shape), frame)


def test_tiler_blending_weights_smooth():
    t = Tiler(128, 32)
    shape = (128 + 96, 128)  # two tiles along rows, overlapping by exactly 32
    wins = t.windows(shape)
    assert [w[0] for w in wins] == [0, 96]
    total = np.zeros(shape)
    weights = []
    for win in wins:
        wt = t._weight(shape, win)
        assert (wt > 0).all() and (wt <= 1).all()
        r, c, h, w = win
        full = np.zeros(shape)
        full[r : r + h, c : c + w] = wt
        weights.append(full)
        total += full
    np.testing.assert_allclose(total, 1.0, atol=1e-12)  # raised-cosine partition of unity
    col = weights[0][:, 64]
    assert np.abs(np.diff(col)).max() < 2 * np.pi / 32  # no jumps: a smooth ramp over the overlap
    assert col[:96].min() == 1.0 and col[128:].max() == 0.0
    # a tile at the frame edge does not ramp there
    assert t._weight(shape, wins[0])[0, 0] == 1.0


def test_tiler_pointwise_equals_whole_frame():
    t = Tiler(64, 8)
    frames = np.random.default_rng(1).random((3, 150, 97)).astype(np.float32)
    seen_scales = []

    def func(tiles, scales):
        seen_scales.extend(scales)
        assert tiles.shape[1:] == (64, 64)
        return tiles**2 + 1

    out = t.apply(frames, func, batch_size=5, scales=["a", "b", "c"])
    np.testing.assert_allclose(out, frames**2 + 1, rtol=1e-6)
    per = len(t.windows((150, 97)))
    assert seen_scales == ["a"] * per + ["b"] * per + ["c"] * per


def test_tiler_small_frames_whole():
    t = Tiler(128, 16)
    assert t.windows((100, 60)) == [(0, 0, 100, 60)]


@pytest.mark.parametrize("tile, overlap", [(64, 32), (64, 40), (0, 0), (64, -1), (64.5, 8)])
def test_tiler_validation(tile, overlap):
    with pytest.raises(ValueError, match="tile"):
        Tiler(tile, overlap)


@pytest.mark.parametrize("shape, whole", [((40, 50), True), ((150, 97), False)])
def test_tiler_process_batches_whole_frames_or_tiles(shape, whole):
    t = Tiler(64, 8)
    frames = np.random.default_rng(2).random((5,) + shape).astype(np.float32)
    calls = []

    def func(tiles, scales):
        calls.append((tiles.shape, None if scales is None else list(scales)))
        return tiles * 2

    out = t.process(frames, func, batch_size=2, scales=list("abcde"))
    np.testing.assert_allclose(out, frames * 2, rtol=1e-6)
    assert all(c[0][0] <= 2 for c in calls)
    if whole:  # frames that fit go through whole, with their own scales
        assert [c[0][1:] for c in calls] == [shape] * 3
        assert [c[1] for c in calls] == [["a", "b"], ["c", "d"], ["e"]]
    else:
        assert all(c[0][1:] == (64, 64) for c in calls)
