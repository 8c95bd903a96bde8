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


@pytest.mark.parametrize("planner", ["uncertainty", "points", "static"])
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


@pytest.mark.parametrize("planner", ["uncertainty", "points"])
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


def test_a_stack_is_refused_with_a_hint():
    s = hs.signals.Signal2D(np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="one frame"):
        hp.adaptive_scan(s)


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
