"""Shared pytest configuration for the hyperspy_partialscan tests."""

import os

# One BLAS/OpenMP thread per process: the package parallelises over frames with dask
# threads, and each tiny per-frame BLAS call (e.g. inside scipy's griddata) spinning up
# a multi-threaded BLAS pool oversubscribes the cores; on a busy machine that costs
# seconds per call. Must be set before numpy is first imported (worker processes of
# dask.distributed inherit it).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# The sample data live in ../shared/data beside the repository (this file's grandparent),
# also when the tests run against an installed (non-editable) package.
_REPO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared", "data")
if not os.environ.get("HYPERSPY_PARTIALSCAN_DATA") and os.path.isdir(_REPO_DATA):
    os.environ["HYPERSPY_PARTIALSCAN_DATA"] = os.path.normpath(_REPO_DATA)

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
