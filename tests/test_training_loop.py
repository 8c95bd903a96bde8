"""The shared training loop: ALRC, schedule, run folders, divergence stop."""

import numpy as np
import pytest
import torch


def test_alrc_scales_down_only_rare_large_losses():
    import torch

    from hyperspy_partialscan.training import ALRC

    alrc = ALRC(n_sigma=3.0, decay=0.9)
    rng = np.random.default_rng(0)
    for v in 1.0 + 0.1 * rng.standard_normal(200):  # settle the running moments
        out = alrc(torch.tensor(float(v)))
    assert float(out) == pytest.approx(float(v))  # ordinary losses pass unchanged
    bound = alrc.mu + 3 * np.sqrt(alrc.mu2 - alrc.mu**2)
    spike = torch.tensor(50.0, requires_grad=True)
    clipped = alrc(spike)
    clipped.backward()
    assert float(clipped) == pytest.approx(bound, rel=1e-6) and float(spike.grad) == pytest.approx(bound / 50, rel=1e-6)
    # a risk estimate (SURE) may be negative: a non-positive bound never flips the loss's sign
    neg = ALRC(decay=0.9, mu=-1.0, mu2=1.0 + 1e-6)
    assert float(neg(torch.tensor(0.5))) == pytest.approx(0.5)



class _Linear(torch.nn.Module):
    """A linear convolution: with a huge learning rate its loss and weights overflow for sure."""

    config = {"kind": "linear"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _tiny_net():
    return _Linear()


def _batches(it):
    g = torch.Generator().manual_seed(it)
    x = torch.rand(2, 2, 32, 32, generator=g)
    return x, 1 - x[:, :1]


def _mse(net, batch):
    x, y = batch
    return ((net(x) - y) ** 2).mean(dim=(1, 2, 3))


def test_learning_rate_schedule():
    from hyperspy_partialscan.training import learning_rate

    lrs = [learning_rate(i, iterations=50, lr=1e-3, lr_min=1e-5, warmup=5) for i in range(50)]
    assert lrs[0] == pytest.approx(2e-4) and max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))  # cosine decay never rises
    # a wall-time budget that is spent ends the decay whatever the iteration
    assert learning_rate(10, iterations=50, lr=1e-3, lr_min=1e-5, warmup=5, time_fraction=1.0) == pytest.approx(1e-5)


def test_a_new_run_never_mixes_with_a_previous_one(tmp_path):
    from hyperspy_partialscan.training import fit_network, run_folder

    run = tmp_path / "run"
    fit_network(_tiny_net(), _batches, _mse, iterations=4, out_dir=run, checkpoint_every=2, show_progressbar=False,
                evaluate=lambda n: {"val": 1.0}, val_every=2)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit_network(_tiny_net(), _batches, _mse, iterations=3, out_dir=run, show_progressbar=False)
    with pytest.raises(FileExistsError, match="already holds a run"), run_folder(run):
        pass
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # untouched
    with pytest.raises(RuntimeError, match="boom"), run_folder(run, overwrite=True):
        fit_network(_tiny_net(), _batches, _mse, iterations=2, out_dir=run, show_progressbar=False)
        raise RuntimeError("boom")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # a failed fresh run restores the old one
    with run_folder(run, overwrite=True):
        fit_network(_tiny_net(), _batches, _mse, iterations=2, out_dir=run, show_progressbar=False,
                    evaluate=lambda n: {"val": 2.0}, val_every=1)
    rows = (run / "validation.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[1].startswith("1,")  # header + this run's two rows only
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "validation.csv"]  # the old run is gone


def test_resume_continues_and_needs_a_checkpoint(tmp_path):
    from hyperspy_partialscan.training import fit_network

    with pytest.raises(FileNotFoundError, match="cannot resume"):
        fit_network(_tiny_net(), _batches, _mse, iterations=2, out_dir=tmp_path / "none", resume=True,
                    show_progressbar=False)
    run = tmp_path / "run"
    fit_network(_tiny_net(), _batches, _mse, iterations=3, out_dir=run, show_progressbar=False)
    history = fit_network(_tiny_net(), _batches, _mse, iterations=5, out_dir=run, resume=True, show_progressbar=False)
    assert [h["iteration"] for h in history] == [4, 5]


@pytest.mark.parametrize("bad", ["nan_loss", "huge_lr"])
def test_divergence_stops_training_and_keeps_the_last_finite_checkpoint(tmp_path, bad):
    from hyperspy_partialscan.training import TrainingDiverged, fit_network

    run = tmp_path / "run"
    fit_network(_tiny_net(), _batches, _mse, iterations=2, out_dir=run, show_progressbar=False)
    good = (run / "checkpoint.pt").read_bytes()

    def loss(net, batch):
        value = _mse(net, batch)
        return value * float("nan") if bad == "nan_loss" else value

    with pytest.raises(TrainingDiverged, match="diverged.*last checkpoint"):
        fit_network(_tiny_net(), _batches, loss, iterations=50, out_dir=run, resume=True, checkpoint_every=1,
                    lr=1e30 if bad == "huge_lr" else 1e-3, warmup=1, show_progressbar=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["network"].values())
    if bad == "nan_loss":
        assert (run / "checkpoint.pt").read_bytes() == good  # no step was taken


@pytest.mark.parametrize("kwargs,message", [
    ({"iterations": 0}, "iterations must be"),
    ({"iterations": 2, "lr": -1.0}, "lr must be"),
    ({"iterations": 2, "max_seconds": 0}, "max_seconds must be"),
])
def test_fit_network_rejects_bad_numbers(kwargs, message):
    from hyperspy_partialscan.training import fit_network

    with pytest.raises(ValueError, match=message):
        fit_network(_tiny_net(), _batches, _mse, show_progressbar=False, **kwargs)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"lr": float("nan")}, {"crop": 0}, {"iterations": -5},
                                 {"noise_fraction": 2.0}, {"width": 0}])
def test_train_config_rejects_bad_numbers(bad):
    from hyperspy_partialscan.training import TrainConfig

    with pytest.raises(ValueError, match=f"^{next(iter(bad))} must be"):
        TrainConfig(**bad)


@pytest.mark.slow
def test_sigkill_during_training_then_resume(tmp_path):
    """A run killed with SIGKILL keeps its last (atomic) checkpoint, and --resume finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hyperspy_partialscan.cli", "train-denoiser", "--synthetic", "2", "--iterations",
           "400", "--batch-size", "2", "--crop", "32", "--width", "4", "--out", str(run), "--no-progressbar"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (run / "checkpoint.pt").exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # never half-written
    done = int(state["iteration"])
    assert 0 < done < 400 and not list(run.glob("*.tmp"))
    out = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]) == 400


def test_a_skipped_last_step_still_checkpoints_the_run(tmp_path):
    from hyperspy_partialscan.training import fit_network

    def loss(net, batch, calls=[0]):  # noqa: B006 - counts the calls of this run
        calls[0] += 1
        value = _mse(net, batch)
        return value * float("nan") if calls[0] == 5 else value

    run = tmp_path / "run"
    history = fit_network(_tiny_net(), _batches, loss, iterations=5, out_dir=run, checkpoint_every=100,
                          show_progressbar=False)
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]  # the non-finite 5th step was skipped
    assert int(torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]) == 4


def test_bf16_runs_the_step_in_bfloat16_and_keeps_float32_weights():
    from hyperspy_partialscan.training import fit_network

    dtypes = []

    def loss(net, batch):
        x, y = batch
        pred = net(x)
        dtypes.append(pred.dtype)
        return ((pred - y) ** 2).mean(dim=(1, 2, 3))  # float32 targets: the loss is float32

    net = _tiny_net()
    history = fit_network(net, _batches, loss, iterations=30, lr=1e-2, warmup=1, show_progressbar=False, bf16=True)
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert history[-1]["running_loss"] < history[0]["loss"]  # it learns
    fit_network(net, _batches, loss, iterations=1, show_progressbar=False)
    assert dtypes[-1] == torch.float32  # off by default


def _lattice_period(img):
    """The strongest spatial period of an image (px), from its power spectrum's radial peak."""
    p = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    radial = np.bincount(r.ravel(), p.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    k = 4 + int(np.argmax(radial[4 : h // 2]))  # skip the support's low frequencies
    return h / k


def test_training_frames_add_lattices_of_the_asked_spacing_without_changing_the_rest():
    from hyperspy_partialscan.training import training_frames

    plain = training_frames([], synthetic=2, seed=5)
    more = training_frames([], synthetic=2, seed=5, lattices=3, lattice_spacing=(24, 30))
    assert len(more) == 5
    assert all(np.array_equal(a, b) for a, b in zip(plain, more))  # the synthetic draws are unchanged
    periods = [_lattice_period(f) for f in more[2:]]
    # the spectrum's peak is a lattice-plane spacing: the constant, or a 1/sqrt(3)-1/sqrt(2) shorter diagonal
    assert all(24 / 2**0.5 * 0.9 <= p <= 30 * 1.1 for p in periods), periods
    again = training_frames([], synthetic=2, seed=5, lattices=3, lattice_spacing=(24, 30))
    assert np.array_equal(again[4], more[4])  # a seed fixes them
