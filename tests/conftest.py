"""Shared pytest configuration for the hyperspy_partialscan tests."""

import os

# One BLAS/OpenMP thread per process: the package parallelises over frames with dask
# threads, and each tiny per-frame BLAS call (e.g. inside scipy's griddata) spinning up
# a multi-threaded BLAS pool oversubscribes the cores; on a busy machine that costs
# seconds per call. Must be set before numpy is first imported (worker processes of
# dask.distributed inherit it).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_progressbar():
    """No dask progress bars in the test output (restores HyperSpy's preference afterwards)."""
    from hyperspy.defaults_parser import preferences

    old = preferences.General.show_progressbar
    preferences.General.show_progressbar = False
    yield
    preferences.General.show_progressbar = old


@pytest.fixture
def close_figures():
    """Close every matplotlib figure a test opened."""
    import matplotlib.pyplot as plt

    yield
    plt.close("all")
