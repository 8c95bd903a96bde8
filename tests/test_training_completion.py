"""Training of the completion generator: the loop on real crops, adversarial stage, fine-tuning, path sampler."""

import numpy as np
import pytest
import torch

from hyperspy_partialscan.models import load_model
from hyperspy_partialscan.models.networks import PartialScanGenerator
from hyperspy_partialscan.specimens import nanoparticle_field


def test_training_lowers_loss_and_writes_model(tmp_path):
    from hyperspy_partialscan.training import (
        CropSampler,
        TrainConfig,
        huberised_mse,
        train_completion,
    )

    frames = [nanoparticle_field((160, 160), seed=i) for i in range(3)]
    cfg = TrainConfig(iterations=40, batch_size=4, crop=64, width=8, inner_blocks=2, outer_blocks=1, warmup=5,
                      lr=2e-3, path_bank=16, virtual_sizes=(64, 128), val_every=40, checkpoint_every=20, seed=0)
    x, y = CropSampler(frames, cfg, np.random.default_rng(99)).batch(8)
    path = train_completion(frames, tmp_path, cfg, val_frames=frames[:1], name="tiny", show_progressbar=False)
    model = load_model(path, task="completion")
    assert model.config["training"]["iterations"] == 40
    assert (tmp_path / "validation.csv").exists() and (tmp_path / "validation.png").exists()
    init = PartialScanGenerator(width=8, inner_blocks=2, outer_blocks=1)  # untrained = linear fill
    with torch.no_grad():
        before = float(huberised_mse(init(x), y, cfg.huber_delta))
        after = float(huberised_mse(model.network(x), y, cfg.huber_delta))
    assert after < before
    # resume continues from the checkpoint
    cfg2 = TrainConfig(**{**cfg.__dict__, "iterations": 45})
    path2 = train_completion(frames, tmp_path, cfg2, resume=True, name="tiny2", show_progressbar=False)
    assert load_model(path2).config["training"]["iterations"] == 45


def test_adversarial_stage_runs(tmp_path):
    from hyperspy_partialscan.training import TrainConfig, train_completion

    frames = [nanoparticle_field((160, 160), seed=i) for i in range(2)]
    cfg = TrainConfig(iterations=6, batch_size=4, crop=96, width=8, inner_blocks=2, outer_blocks=1, warmup=2,
                      path_bank=8, virtual_sizes=(96, 128), adversarial=True, replay=1, seed=1)
    path = train_completion(frames, tmp_path, cfg, name="adv", show_progressbar=False)
    import torch as _t

    state = _t.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "discriminator" in state
    assert load_model(path).config["training"]["config"]["adversarial"] is True


def test_fine_tune_from_init(small_model, tmp_path):
    from hyperspy_partialscan.training import TrainConfig, train_completion

    frames = [nanoparticle_field((128, 128), seed=i) for i in range(2)]
    cfg = TrainConfig(iterations=3, batch_size=2, crop=64, warmup=1, path_bank=4, virtual_sizes=(64,), seed=2)
    path = train_completion(frames, tmp_path, cfg, init=small_model, name="ft", show_progressbar=False)
    m = load_model(path)
    assert m.config["network"]["width"] == 8  # the init's architecture is kept
    assert m.config["training"]["init_training"] is None  # the init has no training record
    # a second stage records how its starting model was trained (provenance chain)
    path2 = train_completion(frames, tmp_path / "stage2", cfg, init=path, name="ft2", show_progressbar=False)
    stage2 = load_model(path2).config["training"]
    assert stage2["init"] == {"name": "ft", "sha256": m.sha256}
    assert stage2["init_training"]["iterations"] == m.config["training"]["iterations"] == 3
    assert m.training_iterations == 3 and load_model(path2).training_iterations == 6  # counted over the chain
    assert [r["init"]["sha256"] for r in load_model(path2).lineage] == [m.sha256, load_model(small_model).sha256]
    assert load_model(small_model).training_iterations is None  # no training record


def test_fine_tune_can_deepen_the_inner_generator(small_model, tmp_path):
    """grow_inner_blocks appends identity blocks and attention_heads a non-local block: the grown model starts
    from the init's function."""
    from hyperspy_partialscan.models.growth import deepen_inner
    from hyperspy_partialscan.training import TrainConfig, train_completion

    init = load_model(small_model)
    have = init.config["network"]["inner_blocks"]
    deep = deepen_inner(init.network, have + 2)
    x = torch.randn(1, init.config["network"]["in_channels"], 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(deep(x), init.network(x))
    with pytest.raises(ValueError, match="inner_blocks must be at least"):
        deepen_inner(init.network, have - 1)
    frames = [nanoparticle_field((128, 128), seed=i) for i in range(2)]
    cfg = TrainConfig(iterations=2, batch_size=2, crop=64, warmup=1, path_bank=4, virtual_sizes=(64,), seed=2,
                      grow_inner_blocks=have + 2)
    m = load_model(train_completion(frames, tmp_path, cfg, init=small_model, name="deep", show_progressbar=False))
    assert m.config["network"]["inner_blocks"] == have + 2
    assert m.config["training"]["deepened"] == {"inner_blocks_from": have, "inner_blocks_to": have + 2}
    cfg = TrainConfig(iterations=2, batch_size=2, crop=64, warmup=1, path_bank=4, virtual_sizes=(64,), seed=2,
                      attention_heads=1)
    m = load_model(train_completion(frames, tmp_path / "a", cfg, init=small_model, name="a", show_progressbar=False))
    assert m.config["network"]["attention_heads"] == 1 and m.config["training"]["grown"] == {"attention_heads": 1}
    with pytest.raises(ValueError, match="attention_heads"):
        TrainConfig(attention_heads=-1)
    # the grown model fine-tunes on (its block kept); asking it for another block is refused
    cfg = TrainConfig(iterations=1, batch_size=2, crop=64, warmup=1, path_bank=4, virtual_sizes=(64,), seed=3)
    again = load_model(train_completion(frames, tmp_path / "b", cfg, init=m.path, name="b", show_progressbar=False))
    assert again.config["network"]["attention_heads"] == 1 and "grown" not in again.config["training"]
    with pytest.raises(ValueError, match="already has attention"):
        train_completion(frames, tmp_path / "c", TrainConfig(**{**cfg.__dict__, "attention_heads": 2}), init=m.path,
                         name="c", show_progressbar=False)


def test_crop_sampler_redraws_paths_that_cannot_be_generated(monkeypatch):
    """A few jittered lines on a 256² frame cannot always meet ~1/88 coverage (generate_path raises for
    3 of 40 seeds); the training sampler draws another path instead of ending the run, and says so
    when no path of the mix can be made at all."""
    from hyperspy_partialscan.paths import generate_path
    from hyperspy_partialscan.training import CropSampler, TrainConfig

    failing = []
    for seed in range(40):
        try:
            generate_path("jittered_grid", (256, 256), 0.01138, np.random.default_rng(seed))
        except ValueError:
            failing.append(seed)
    assert failing  # the situation the sampler must survive does occur
    cfg = TrainConfig(path_bank=40, virtual_sizes=(256,), coverage_range=(0.01137, 0.01139),
                      paths={"jittered_grid": 1.0})
    sampler = CropSampler([np.random.default_rng(0).random((300, 300))], cfg, np.random.default_rng(failing[0]))
    assert len(sampler.bank) == 40
    from hyperspy_partialscan.training import completion as training

    def never(*args, **kwargs):
        raise ValueError("cannot reach coverage")

    monkeypatch.setattr(training, "generate_path", never)
    with pytest.raises(ValueError, match="could be generated"):
        CropSampler([np.random.default_rng(0).random((300, 300))], cfg, np.random.default_rng(0))



def test_crop_sampler_mixes_in_adaptive_style_paths(monkeypatch):
    import hyperspy_partialscan.training.completion as tc

    calls, real = [], tc.adaptive_style_path

    def spy(truth, initial, total, rng):
        path = real(truth, initial, total, rng)
        calls.append((len(initial.positions), len(path.positions), total))
        return path

    monkeypatch.setattr(tc, "adaptive_style_path", spy)
    frames = [nanoparticle_field((256, 256), seed=k) for k in range(2)]
    sampler = tc.CropSampler(frames, tc.TrainConfig(adaptive_fraction=1.0, path_bank=8), np.random.default_rng(0))
    partial, target, _ = sampler.crop_with_noise()
    assert calls and all(n0 <= n <= total for n0, n, total in calls)  # extended, never beyond the budget
    assert partial.shape == target.shape == (128, 128)
    assert 0 < np.isfinite(partial).sum() <= calls[-1][1]


@pytest.mark.parametrize("bad", [{"adaptive_fraction": 1.5}, {"adaptive_initial": (0.0, 0.5)}])
def test_adaptive_options_are_checked(bad):
    from hyperspy_partialscan.training.completion import TrainConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)
