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


# ------------------------------------------------- small networks and data shared by test modules


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A small generator with a non-trivial (random) residual branch."""
    import torch

    from hyperspy_partialscan.models import save_model
    from hyperspy_partialscan.models.networks import PartialScanGenerator

    torch.manual_seed(0)
    net = PartialScanGenerator(width=8, inner_blocks=2, outer_blocks=1)
    with torch.no_grad():
        net.out[-1].weight.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    return save_model(net, path, task="completion", architecture="PartialScanGenerator", extra={"note": "test"})


@pytest.fixture(scope="module")
def small_denoiser(tmp_path_factory):
    """A small denoiser with a non-trivial (random) output layer."""
    import torch

    from hyperspy_partialscan.models import save_model
    from hyperspy_partialscan.models.networks import DenoisingUNet

    torch.manual_seed(0)
    net = DenoisingUNet(width=4)
    with torch.no_grad():
        net.out.weight.normal_(0, 0.05)
    return save_model(net, tmp_path_factory.mktemp("dn") / "dn.safetensors", task="denoising",
                      architecture="DenoisingUNet")


@pytest.fixture(scope="module")
def clean():
    """Four clean nanoparticle frames, maximum 1."""
    import numpy as np

    from hyperspy_partialscan.specimens import nanoparticle_field

    frames = np.stack([nanoparticle_field((64, 80), seed=i) for i in range(4)])
    return frames / frames.max()


@pytest.fixture(scope="module")
def noisy_signal(clean):
    """``clean`` with Poisson noise at 30 e-/px, as a Signal2D with axes and metadata."""
    import hyperspy.api as hs
    import numpy as np

    from hyperspy_partialscan.noise import FrameNoise, degrade

    noisy = np.stack([degrade(c, FrameNoise(dose=30), i) for i, c in enumerate(clean)])
    s = hs.signals.Signal2D(noisy)
    s.axes_manager[-1].scale = 0.5
    s.axes_manager[-1].units = "nm"
    s.metadata.General.title = "noisy"
    s.original_metadata.set_item("Microscope.voltage", 200)
    return s
