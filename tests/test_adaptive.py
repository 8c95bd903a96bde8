"""adaptive_scan: planners, the acquire protocol, the budget, determinism, stopping without loss."""

import hyperspy.api as hs
import numpy as np
import pytest

import hyperspy_partialscan as hp


@pytest.fixture(scope="module")
def specimen():
    s = hs.signals.Signal2D(hp.specimens.nanoparticle_field((96, 96), seed=2))
    s.metadata.General.title = "particles"
    return s


class Recorder:
    """A 'real microscope' wrapping the simulated one: records every call."""

    def __init__(self, frame, fail_at=None):
        self.frame, self.calls, self.fail_at = frame, [], fail_at

    def __call__(self, positions):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise ConnectionError("scan generator lost")
        self.calls.append(np.array(positions))
        rows, cols = np.rint(positions).astype(int).T
        return self.frame[rows, cols]


@pytest.mark.parametrize("planner", ["uncertainty", "curvature", "points", "static"])
def test_acquire_gets_the_planned_positions_in_order(specimen, planner):
    rec = Recorder(specimen.data)
    p = hp.adaptive_scan(None, coverage=0.08, planner=planner, steps=3, acquire=rec, shape=specimen.data.shape,
                         device="cpu")
    md = p.metadata.Signal.Partial_scan
    assert len(rec.calls) == 4 == len(md.positions_per_step)  # once per step (initial + 3)
    np.testing.assert_array_equal(np.concatenate(rec.calls), md.positions)  # exactly what was acquired, in order
    assert [len(c) for c in rec.calls] == list(md.positions_per_step)
    assert p.coverage <= 0.08 * 1.02  # the coverage never exceeds the request
    if planner != "static":  # (the static spiral's positions are its own: a pixel may hold several)
        assert sum(md.positions_per_step) <= round(0.08 * 96 * 96) * 1.02
    assert md.stopped == "completed" and md.planner == planner


def test_static_planner_reproduces_the_static_path(specimen):
    static = hp.to_partial_scan(specimen, "spiral", 0.06, seed=4)
    adaptive = hp.adaptive_scan(specimen, coverage=0.06, planner="static", steps=5, seed=4)
    np.testing.assert_array_equal(np.isfinite(adaptive.data), np.isfinite(static.data))
    np.testing.assert_allclose(adaptive.data[np.isfinite(adaptive.data)], static.data[np.isfinite(static.data)])


@pytest.mark.parametrize("planner", ["uncertainty", "curvature", "points"])
def test_seed_makes_the_scan_deterministic(specimen, planner):
    a = hp.adaptive_scan(specimen, coverage=0.06, planner=planner, steps=2, seed=7, device="cpu",
                         noise={"dose": 200})
    b = hp.adaptive_scan(specimen, coverage=0.06, planner=planner, steps=2, seed=7, device="cpu",
                         noise={"dose": 200})
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.metadata.Signal.Partial_scan.positions, b.metadata.Signal.Partial_scan.positions)


def test_record_has_steps_path_length_and_flybacks(specimen):
    p = hp.adaptive_scan(specimen, coverage=0.08, planner="uncertainty", steps=2, seed=1, device="cpu")
    md = p.metadata.Signal.Partial_scan
    assert md.source == "adaptive" and md.path_length_px > 0 and md.flybacks >= 1  # segments are joined by jumps
    steps = np.asarray(md.step_of_position)
    assert list(np.bincount(steps)) == list(md.positions_per_step)
    assert p.metadata.General.title == "particles (adaptive uncertainty, 8 %)"


def test_uncertainty_planner_scans_where_sigma_is_large(specimen):
    """The planned steps land on pixels of larger predicted sigma than the static continuation's."""
    from hyperspy_partialscan.adaptive import StaticPlanner, UncertaintyPlanner

    initial = hp.generate_path("spiral", (96, 96), 0.02, 0).positions
    rows, cols = np.rint(initial).astype(int).T
    partial = np.full((96, 96), np.nan)
    partial[rows, cols] = specimen.data[rows, cols]
    planner = UncertaintyPlanner(16, device="cpu")
    chosen = planner.plan(partial, initial[-1], 200, np.random.default_rng(0))
    sigma = np.asarray(planner.history[-1])
    full = hp.generate_path("spiral", (96, 96), 0.05, 0).positions
    static = StaticPlanner(full[len(initial):]).plan(partial, initial[-1], 200, None)
    gain = [sigma[tuple(np.rint(p).astype(int).T)].mean() for p in (chosen, static)]
    assert gain[0] > 1.2 * gain[1]  # (here 1.47x)


def test_failing_acquire_returns_what_was_acquired(specimen):
    rec = Recorder(specimen.data, fail_at=2)
    p = hp.adaptive_scan(None, coverage=0.08, planner="points", steps=4, acquire=rec, shape=(96, 96), device="cpu")
    md = p.metadata.Signal.Partial_scan
    assert md.stopped.startswith("stopped at step 2: ConnectionError: scan generator lost")
    assert len(md.positions_per_step) == 2 and np.isfinite(p.data).sum() > 0
    np.testing.assert_array_equal(np.concatenate(rec.calls), md.positions)


@pytest.mark.parametrize("kwargs,message", [
    ({"coverage": 0}, "coverage must be"),
    ({"coverage": 1.5}, "coverage must be"),
    ({"planner": "greedy"}, "planner"),
    ({"steps": -1}, "steps must be"),
    ({"initial_fraction": 0}, "initial_fraction must be"),
])
def test_bad_arguments(specimen, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hp.adaptive_scan(specimen, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"navigation_chunks": 0}, "navigation_chunks must be"),
    ({"seed": -1}, "seed"),
    ({"initial_path": "zigzag"}, "initial_path"),
    ({"segment_length": 0}, "segment_length must be"),
    ({"max_jump": 0}, "max_jump must be"),
    ({"planner": object()}, "planner must be one of"),
    ({"acquire": 3}, "acquire must be a callable"),
])
def test_bad_arguments_named(specimen, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hp.adaptive_scan(specimen, **kwargs)


def test_partial_scan_specimen_and_acquire_on_a_stack_refused(specimen):
    partial = hp.to_partial_scan(specimen, "random", 0.3, seed=0)
    with pytest.raises(ValueError, match="specimen: .* non-finite pixel"):
        hp.adaptive_scan(partial, planner="static")
    stack = hs.signals.Signal2D(np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="acquire drives one frame"):
        hp.adaptive_scan(stack, acquire=Recorder(np.zeros((16, 16))))


@pytest.fixture(scope="module")
def stack():
    frames = [hp.specimens.nanoparticle_field((48, 48), seed=k) for k in range(3)]
    s = hs.signals.Signal2D(np.stack(frames).reshape(3, 1, 48, 48).astype(np.float32))
    s.metadata.General.title = "stack"
    s.axes_manager[-1].scale = 0.25
    return s


STACK_KW = {"coverage": 0.1, "planner": "points", "steps": 1, "seed": 3, "device": "cpu", "noise": {"dose": 300}}


@pytest.fixture(scope="module")
def eager_stack_scan(stack):
    return hp.adaptive_scan(stack, **STACK_KW)


def _summaries(p):
    from hyperspy_partialscan.adaptive import STACK_SUMMARIES

    md = p.metadata.Signal.Partial_scan
    return {k: np.asarray(md.get_item(k)) for k in ("coverage_measured",) + STACK_SUMMARIES}


@pytest.mark.parametrize("lazy_output", [False, True])
def test_lazy_stack_gives_the_eager_result(stack, eager_stack_scan, lazy_output):
    p = hp.adaptive_scan(stack.as_lazy(), lazy_output=lazy_output, navigation_chunks=2, **STACK_KW)
    assert p._lazy == lazy_output and type(p).__name__ == ("Lazy" if lazy_output else "") + "PartialScan2D"
    data = p.data.compute() if lazy_output else p.data
    np.testing.assert_array_equal(data, eager_stack_scan.data)
    eager = _summaries(eager_stack_scan)
    assert eager["coverage_measured"].shape == (3, 1) and (eager["stopped_at_step"] == -1).all()
    assert (eager["positions_total"] > 0).all() and (eager["flybacks"] >= 0).all()
    md = p.metadata.Signal.Partial_scan
    if lazy_output:
        assert md.flybacks == md.stopped == "not computed (lazy output)"
    else:
        for k, v in _summaries(p).items():
            np.testing.assert_array_equal(v, eager[k], err_msg=k)
        assert md.stopped == "completed"
    assert md.source == "adaptive" and list(md.frame_shape) == [48, 48] and not md.has_item("positions")
    assert p.axes_manager[-1].scale == 0.25 and p.metadata.General.title == "stack (adaptive points, 10 %)"


def test_stack_frame_k_is_the_single_frame_scan_with_frame_k_streams(stack, eager_stack_scan):
    """Frame 0 is the frame scanned on its own; frame k is the same scan drawn from frame_rng(seed, k)."""
    from hyperspy_partialscan import adaptive

    single = hp.adaptive_scan(stack.inav[0, 0], **STACK_KW)
    np.testing.assert_array_equal(eager_stack_scan.data[0, 0], single.data)
    md = single.metadata.Signal.Partial_scan
    assert np.asarray(eager_stack_scan.metadata.Signal.Partial_scan.positions_total)[0, 0] == len(md.positions)
    settings = adaptive._settings(STACK_KW["coverage"], "points", "spiral", 0.25, 1, None, None,
                                  hp.NoiseModel.coerce(STACK_KW["noise"]), None, None, "cpu", 2, 3)
    for k in (1, 2):
        frame = stack.data[k, 0].astype(np.float64)
        scan = adaptive._scan(settings, frame.shape, k, frame=frame)
        np.testing.assert_array_equal(eager_stack_scan.data[k, 0], scan.image(frame.shape))
    other = adaptive._scan(settings, frame.shape, 0, frame=frame)  # frame 2's data drawn as frame 0
    assert not np.array_equal(other.image(frame.shape), eager_stack_scan.data[2, 0])


@pytest.mark.parametrize("lazy", [False, True])
def test_static_planner_on_a_stack_is_the_static_simulation(stack, lazy):
    """One random-stream rule: the static planner on a stack gives to_partial_scan's stack, noise included."""
    s = stack.as_lazy() if lazy else stack
    adaptive = hp.adaptive_scan(s, coverage=0.08, planner="static", steps=3, seed=5, noise={"dose": 50})
    static = hp.to_partial_scan(s, "spiral", 0.08, seed=5, noise={"dose": 50})
    a, b = (x.data.compute() if lazy else x.data for x in (adaptive, static))
    np.testing.assert_array_equal(a, b)


class CountingPlanner:
    """A user's planner with state: the next positions of a raster, row after row."""

    def __init__(self):
        self.calls = 0

    def plan(self, partial, probe, n, rng):
        self.calls += 1
        free = np.argwhere(~np.isfinite(partial))[:n]
        return free.astype(np.float64)


def test_user_planner_copied_per_frame_of_a_stack(stack):
    planner = CountingPlanner()
    p = hp.adaptive_scan(stack, coverage=0.1, planner=planner, steps=2, seed=0)
    assert planner.calls == 0 and p.metadata.Signal.Partial_scan.planner == "CountingPlanner"
    assert (np.asarray(p.metadata.Signal.Partial_scan.stopped_at_step) == -1).all()
    hp.adaptive_scan(stack.inav[0, 0], coverage=0.1, planner=planner, steps=2, seed=0)
    assert planner.calls == 2  # one frame: the planner is used as given


def test_single_frame_keeps_the_specimens_axes_and_metadata(specimen):
    s = specimen.deepcopy()
    s.axes_manager[0].scale, s.axes_manager[0].units = 0.5, "nm"
    s.original_metadata.set_item("Microscope.voltage", 300)
    p = hp.adaptive_scan(s, coverage=0.05, planner="static", steps=1, lazy_output=True)
    assert type(p).__name__ == "LazyPartialScan2D" and p.axes_manager[0].units == "nm"
    assert p.original_metadata.Microscope.voltage == 300 and p.axes_manager[0].scale == 0.5
    md = p.metadata.Signal.Partial_scan
    assert md.positions.shape == (len(md.step_of_position), 2) and 0 < md.coverage_measured <= 0.05 * 1.02


@pytest.mark.parametrize("show", [True, False])
def test_progressbar_over_steps_and_frames(specimen, stack, show, capsys):
    hp.adaptive_scan(specimen, coverage=0.05, planner="static", steps=3, show_progressbar=show)
    err = capsys.readouterr().err
    assert ("4/4" in err) == show  # steps 0 (initial path) to 3
    hp.adaptive_scan(stack, coverage=0.05, planner="static", steps=1, show_progressbar=show)
    assert ("100%" in capsys.readouterr().out) == show  # dask's bar over the frames


def test_plot_scan_path_colours_positions_by_step(specimen, close_figures):
    import matplotlib.pyplot as plt

    p = hp.adaptive_scan(specimen, coverage=0.06, planner="static", steps=3, seed=2)
    ax = hp.plot_scan_path(p, max_points=10**6)
    steps = np.asarray(p.metadata.Signal.Partial_scan.step_of_position)
    dots = ax.collections[0]
    np.testing.assert_array_equal(dots.get_array(), steps)
    np.testing.assert_allclose(dots.get_offsets()[:, ::-1], p.metadata.Signal.Partial_scan.positions)
    assert ax.figure.axes[-1].get_ylabel() == "step" and len(set(steps)) == 4
    plain = hp.plot_scan_path(hp.to_partial_scan(specimen, "spiral", 0.06, seed=2), ax=plt.subplots()[1])
    assert not plain.collections  # static scans keep their plain path
    stack = hp.adaptive_scan(hs.signals.Signal2D(np.stack([specimen.data] * 2)), coverage=0.06, planner="static",
                             steps=1)
    with pytest.raises(ValueError, match="per-frame summaries"):
        hp.plot_scan_path(stack)


def test_cli_adaptive(tmp_path, specimen, capsys):
    from hyperspy_partialscan import cli

    inp = tmp_path / "in.hspy"
    specimen.save(inp)
    before = inp.read_bytes()
    out = tmp_path / "adaptive.hspy"
    rc = cli.main(["adaptive", str(inp), str(out), "--coverage", "0.06", "--steps", "2", "--planner", "points",
                   "--dose", "100", "--device", "cpu", "--no-progressbar"])
    assert rc == 0, capsys.readouterr().err
    p = hs.load(out)
    md = p.metadata.Signal.Partial_scan
    assert md.source == "adaptive" and md.planner == "points" and len(md.positions_per_step) == 3
    assert 0 < np.isfinite(p.data).mean() <= 0.06 * 1.02 and inp.read_bytes() == before
    rc = cli.main(["adaptive", str(inp), str(tmp_path / "x.hspy"), "--steps", "-1"])
    assert rc == 2 and "--steps must be an integer >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("lazy", [False, True])
def test_cli_adaptive_stack(tmp_path, stack, capsys, lazy):
    from hyperspy_partialscan import cli

    inp = tmp_path / "stack.hspy"
    stack.save(inp)
    out = tmp_path / "scans.zspy"
    args = ["adaptive", str(inp), str(out), "--coverage", "0.1", "--steps", "2", "--planner", "static", "--seed", "4",
            "--dose", "50", "--no-progressbar"] + (["--lazy", "--navigation-chunks", "2"] if lazy else [])
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out}: static adaptive scans of 3 frames (3x1x48x48)")
    assert lines[0].endswith("scanned while writing" if lazy else "flybacks per frame, completed")
    expected = hp.adaptive_scan(stack, coverage=0.1, planner="static", steps=2, seed=4, noise={"dose": 50})
    np.testing.assert_array_equal(hs.load(out).data, expected.data)
