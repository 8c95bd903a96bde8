"""Generator models: safe loading, inference engine, tiling, training."""

import hashlib
import json

import hyperspy.api as hs
import numpy as np
import pytest
import torch

import hyperspy_partialscan as ps
from hyperspy_partialscan.models import list_models, load_model, save_model
from hyperspy_partialscan.specimens import nanoparticle_field


@pytest.fixture(scope="module")
def partial_stack():
    frames = np.stack([nanoparticle_field((96, 128), seed=i) for i in range(5)])
    s = hs.signals.Signal2D(frames)
    s.axes_manager[1].scale = 0.2
    s.axes_manager[1].units = "nm"
    s.metadata.General.title = "particles"
    return ps.to_partial_scan(s, "spiral", 0.1, seed=1, vary_per_frame=True, show_progressbar=False)


def test_save_load_roundtrip(small_model):
    m = load_model(small_model, task="completion")
    assert m.task == "completion" and m.config["note"] == "test"
    assert m.sha256 == json.loads(small_model.with_suffix(".json").read_text())["sha256"]
    # the JSON path and the folder work too
    assert load_model(small_model.with_suffix(".json")).sha256 == m.sha256
    assert load_model(small_model.parent).sha256 == m.sha256
    # the weights are as readable as the JSON (the umask's permissions, not safetensors' owner-only 0600)
    assert small_model.stat().st_mode & 0o777 == small_model.with_suffix(".json").stat().st_mode & 0o777


def test_inference_copy_is_channels_last_and_equal(small_model):
    """The per-device inference copy runs channels-last; the loaded network is untouched."""
    m = load_model(small_model, task="completion")
    net = m.on(torch.device("cpu"))
    assert net is not m.network and net is m.on(torch.device("cpu"))
    convs = [p for p in net.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(p.is_contiguous() for p in m.network.parameters())
    x = torch.rand(2, 4, 64, 64)
    with torch.inference_mode():
        ref = m.network.eval()(x)
        got = net(x.contiguous(memory_format=torch.channels_last))
    ref, got = (ref[0], got[0]) if isinstance(ref, tuple) else (ref, got)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_shipped_models_listed():
    for name in list_models():
        m = load_model(name)
        assert m.task in ("completion", "denoising", "uncertainty")
        assert "training" in m.config
    # the shipped uncertainty model belongs to the shipped generator and carries its calibration
    unc = load_model("uncertainty_default", task="uncertainty")
    assert unc.config["generator"]["sha256"] == load_model("completion_default").sha256
    assert unc.config["calibration"]["scales"]["spiral"] and unc.config["calibration"]["global"] > 0


def test_tampered_weights_rejected(small_model, tmp_path):
    bad = tmp_path / "bad.safetensors"
    raw = bytearray(small_model.read_bytes())
    raw[-10] ^= 0xFF
    bad.write_bytes(bytes(raw))
    bad.with_suffix(".json").write_text(small_model.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="SHA-256"):
        load_model(bad)


def test_truncated_weights_rejected(small_model, tmp_path):
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(small_model.read_bytes()[: 500])
    bad.with_suffix(".json").write_text(small_model.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="do not belong together"):  # the JSON's hash is the full file's
        load_model(bad)
    cfg = json.loads(small_model.with_suffix(".json").read_text())
    cfg["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()  # a consistent pair, broken weights
    bad.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="cannot be read as safetensors"):
        load_model(bad)


def test_incompatible_config_rejected(small_model, tmp_path):
    bad = tmp_path / "wrong.safetensors"
    bad.write_bytes(small_model.read_bytes())
    cfg = json.loads(small_model.with_suffix(".json").read_text())
    cfg["network"]["width"] = 16
    bad.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit"):
        load_model(bad)


def test_wrong_task_and_unknown_name(small_model):
    with pytest.raises(ValueError, match="not a denoising model"):
        load_model(small_model, task="denoising")
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no_such_model_name")


def test_missing_config(small_model, tmp_path):
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(small_model.read_bytes())
    with pytest.raises(FileNotFoundError, match="configuration"):
        load_model(lone)


@pytest.mark.parametrize("lazy", [False, True])
def test_generator_completion(small_model, partial_stack, lazy):
    s = partial_stack.as_lazy() if lazy else partial_stack
    before = s.data.copy() if not lazy else None
    c = s.complete_partial_scan("generator", model=small_model, device="cpu", show_progressbar=False)
    assert c._lazy == lazy
    data = c.data.compute() if lazy else c.data
    assert data.shape == partial_stack.data.shape and data.dtype == np.float32
    assert np.isfinite(data).all()
    assert c.metadata.General.title == f"Completed {s.metadata.General.title}"
    prov = c.metadata.Signal.Partial_scan.Completion
    assert prov.method == "generator" and prov.device == "cpu" and prov.model_sha256 == load_model(small_model).sha256
    assert c.axes_manager[1].scale == 0.2 and c.axes_manager[1].units == "nm"
    if before is not None:
        np.testing.assert_array_equal(np.isnan(before), np.isnan(partial_stack.data))
    # deterministic
    again = ps.complete_partial_scan(s, model=small_model, device="cpu", show_progressbar=False)
    np.testing.assert_array_equal(data, again.data.compute() if lazy else again.data)


def test_batch_equals_per_frame(small_model, partial_stack):
    batched = ps.complete_partial_scan(partial_stack, model=small_model, navigation_chunks=5, show_progressbar=False)
    single = ps.complete_partial_scan(partial_stack, model=small_model, navigation_chunks=1, show_progressbar=False)
    np.testing.assert_allclose(batched.data, single.data, atol=1e-4)


def test_keep_measured(small_model, partial_stack):
    c = ps.complete_partial_scan(partial_stack, model=small_model, keep_measured=True, show_progressbar=False)
    m = np.isfinite(partial_stack.data)
    np.testing.assert_array_equal(c.data[m], partial_stack.data[m])
    assert c.metadata.Signal.Partial_scan.Completion.keep_measured


def test_tiling_seamless(small_model):
    truth = nanoparticle_field((256, 256), seed=7)
    p = ps.to_partial_scan(hs.signals.Signal2D(truth), "random", 0.1, seed=2, show_progressbar=False)
    whole = ps.complete_partial_scan(p, model=small_model, tile_size=256, show_progressbar=False).data
    tiled = ps.complete_partial_scan(p, model=small_model, tile_size=128, show_progressbar=False).data
    span = np.ptp(truth)
    assert np.abs(tiled - whole).mean() < 0.005 * span
    assert np.abs(tiled - whole).max() < 0.1 * span
    # no seam: the error along tile borders is no worse than elsewhere
    err = np.abs(tiled - truth)
    border = err[:, 100:130].mean()
    assert border < 1.5 * err.mean()


def test_reduced_precision_path_on_cpu(small_model, partial_stack):
    """The autocast path used on GPUs also runs on the CPU (bfloat16)."""
    full = ps.complete_partial_scan(partial_stack, model=small_model, show_progressbar=False).data
    low = ps.complete_partial_scan(partial_stack, model=small_model, precision="bfloat16", show_progressbar=False)
    assert low.metadata.Signal.Partial_scan.Completion.precision == "bfloat16"
    assert np.abs(low.data - full).mean() < 0.02 * np.nanmax(np.abs(full))


def test_device_selection():
    from hyperspy_partialscan.device import select_device

    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_nan_inf_safe(small_model):
    frame = nanoparticle_field((64, 64), seed=3)
    partial = np.where(np.random.default_rng(0).uniform(size=frame.shape) < 0.2, frame, np.nan).astype(np.float32)
    partial[0, 0] = np.inf  # treated as unsampled
    s = ps.as_partial_scan(hs.signals.Signal2D(partial), unscanned_value=None)
    c = ps.complete_partial_scan(s, model=small_model, show_progressbar=False)
    assert np.isfinite(c.data).all()




def test_uncertainty_context_branch_round_trips(tmp_path):
    import torch

    from hyperspy_partialscan.models import load_model, save_model
    from hyperspy_partialscan.models.networks import UncertaintyUNet

    torch.manual_seed(0)
    net = UncertaintyUNet(6, 4, context=True)
    with torch.no_grad():
        net.out.weight.normal_()  # the output layer starts at zero: give it weights to see the features
    x = torch.randn(2, 6, 32, 32)
    plain = UncertaintyUNet(6, 4)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("context.")})
    torch.testing.assert_close(net(x), plain(x))  # zero-initialised: starts as the plain network
    with torch.no_grad():
        net.context.bias.fill_(0.5)
    assert not torch.allclose(net(x), plain(x))  # and the frame's statistics do reach the output
    path = save_model(net, tmp_path / "u.safetensors", task="uncertainty", architecture="UncertaintyUNet")
    back = load_model(path, task="uncertainty")
    torch.testing.assert_close(back.on(torch.device("cpu"))(x), net(x))


def test_uncertainty_downscale_runs_the_same_weights_on_block_means(tmp_path):
    import torch.nn.functional as F

    from hyperspy_partialscan.models import load_model, save_model
    from hyperspy_partialscan.models.inference import run_network
    from hyperspy_partialscan.models.networks import UncertaintyUNet

    torch.manual_seed(0)
    full = UncertaintyUNet(6, 4, context=True)
    with torch.no_grad():
        full.out.weight.normal_()
    half = UncertaintyUNet(6, 4, context=True, downscale=2)
    half.load_state_dict(full.state_dict())  # same weights: the resolution is not a parameter
    x = torch.randn(2, 6, 64, 96)
    expected = F.interpolate(full(F.avg_pool2d(x, 2)), size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(half(x), expected)
    assert half.multiple == 2 * full.multiple
    y = run_network(half, np.random.default_rng(0).standard_normal((1, 6, 50, 37)).astype(np.float32))
    assert y.shape == (1, 50, 37) and np.isfinite(y).all()  # padded to the multiple and cropped back
    path = save_model(half, tmp_path / "u.safetensors", task="uncertainty", architecture="UncertaintyUNet")
    back = load_model(path, task="uncertainty")
    assert back.config["network"]["downscale"] == 2
    torch.testing.assert_close(back.on(torch.device("cpu"))(x), half(x))
    with pytest.raises(ValueError, match="downscale must be a positive integer"):
        UncertaintyUNet(6, 4, downscale=0)


def test_generator_attention_starts_as_identity_reaches_far_and_round_trips(tmp_path):
    """The generator's non-local block (keys and values from 2x2 means) grows as the identity, carries
    information across the frame beyond the convolutions' reach, and survives a save/load round trip."""
    from hyperspy_partialscan.models import load_model, save_model
    from hyperspy_partialscan.models.growth import add_attention
    from hyperspy_partialscan.models.networks import NonLocalBlock, PartialScanGenerator

    torch.manual_seed(0)
    net = PartialScanGenerator(4, width=4, inner_blocks=1)
    with torch.no_grad():
        net.out[-1].weight.normal_()  # the output layer starts at zero: give it weights to see the features
    grown = add_attention(net, 2)
    assert grown.attention.kv_stride == 2 and grown.config["attention_heads"] == 2
    x = torch.randn(1, 4, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), net(x))  # the new block starts as the identity
        grown.attention.proj.weight.normal_()
        grown.attention.qkv.weight.normal_()
        far = x.clone()
        far[..., :8, :8] += 3.0
        assert torch.equal(net(far)[..., -16:, -16:], net(x)[..., -16:, -16:])
        assert (grown(far)[..., -16:, -16:] - grown(x)[..., -16:, -16:]).abs().max() > 0
    path = save_model(grown, tmp_path / "g.safetensors", task="completion", architecture="PartialScanGenerator")
    back = load_model(path, task="completion")
    assert back.config["network"]["attention_heads"] == 2
    torch.testing.assert_close(back.on(torch.device("cpu"))(x), grown(x))
    # pooled keys and values work on any map size (ceil); on a map constant over positions they equal stride 1
    block = NonLocalBlock(8, heads=2, head_dim=4, kv_stride=2)
    with torch.no_grad():
        block.proj.weight.normal_()
        assert block(torch.randn(2, 8, 7, 5)).shape == (2, 8, 7, 5)
        flat = torch.linspace(0, 1, 8).reshape(1, 8, 1, 1).expand(1, 8, 6, 6).contiguous()
        pooled = block(flat)  # a map constant over positions: pooling the keys and values changes nothing
        block.kv_stride = 1
        torch.testing.assert_close(block(flat), pooled)


def test_interpolate_weights_spans_start_to_end_grows_the_start_and_refuses_other_architectures():
    """WiSE-FT: fraction 0 computes the start, 1 the fine-tune, between them each weight moves linearly. A
    fine-tune that grew a non-local block and inner blocks interpolates with its start: the start is grown
    as the identity, the block's output scaled by the fraction. Neither network is changed."""
    from hyperspy_partialscan.models.growth import add_attention, deepen_inner, interpolate_weights
    from hyperspy_partialscan.models.networks import PartialScanGenerator

    torch.manual_seed(1)
    start = PartialScanGenerator(4, width=4, inner_blocks=1)
    with torch.no_grad():
        start.out[-1].weight.normal_()
        end = add_attention(deepen_inner(start, 2), 2)
        for p in end.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = {k: v.clone() for k, v in start.state_dict().items()}
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(interpolate_weights(start, end, 0.0)(x), start(x))
        torch.testing.assert_close(interpolate_weights(start, end, 1.0)(x), end(x))
        half = interpolate_weights(start, end, 0.5)
    assert half.config == end.config
    torch.testing.assert_close(half.attention.proj.weight, end.attention.proj.weight / 2)  # grown as zero
    torch.testing.assert_close(half.attention.qkv.weight, end.attention.qkv.weight)  # end's: start ignores it
    torch.testing.assert_close(half.inner_blocks[1].conv2.weight, end.inner_blocks[1].conv2.weight / 2)
    torch.testing.assert_close(half.inner_in[0].bias, (start.inner_in[0].bias + end.inner_in[0].bias) / 2)
    assert all(torch.equal(v, before[k]) for k, v in start.state_dict().items())
    with pytest.raises(ValueError, match="a network and its fine-tune"):
        interpolate_weights(PartialScanGenerator(4, width=8, inner_blocks=1), end, 0.5)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got 1.5"):
        interpolate_weights(start, end, 1.5)


def test_denoiser_attention_starts_as_identity_reaches_far_and_round_trips(tmp_path):
    from hyperspy_partialscan.models import load_model, save_model
    from hyperspy_partialscan.models.growth import add_attention
    from hyperspy_partialscan.models.networks import DenoisingUNet, UncertaintyUNet

    torch.manual_seed(0)
    net = DenoisingUNet(width=4)
    with torch.no_grad():
        net.out.weight.normal_()  # the output layer starts at zero: give it weights to see the features
    grown = add_attention(net, 2)
    x = torch.randn(1, 2, 128, 128)
    torch.testing.assert_close(grown(x), net(x))  # the new block starts as the identity
    with pytest.raises(ValueError, match="already has attention"):
        add_attention(grown, 2)
    with pytest.raises(TypeError, match="DenoisingUNet or a PartialScanGenerator"):
        add_attention(UncertaintyUNet(6, 4), 2)
    with torch.no_grad():
        grown.attention.proj.weight.normal_()
        grown.attention.qkv.weight.normal_()
    # non-local: a change in one corner moves the output in the far corner, beyond the convolutions' reach
    x = torch.randn(1, 2, 256, 256)
    far = x.clone()
    far[..., :8, :8] += 3.0
    with torch.no_grad():
        assert torch.equal(net(far)[..., -16:, -16:], net(x)[..., -16:, -16:])
        assert (grown(far)[..., -16:, -16:] - grown(x)[..., -16:, -16:]).abs().max() > 0
    path = save_model(grown, tmp_path / "d.safetensors", task="denoising", architecture="DenoisingUNet")
    back = load_model(path, task="denoising")
    assert back.config["network"]["attention_heads"] == 2
    torch.testing.assert_close(back.on(torch.device("cpu"))(x), grown(x))


def test_denoiser_bottleneck_blocks_start_as_identity_learn_and_round_trip(tmp_path):
    from hyperspy_partialscan.models import load_model, save_model
    from hyperspy_partialscan.models.growth import add_attention, deepen_bottleneck
    from hyperspy_partialscan.models.networks import DenoisingUNet, UncertaintyUNet

    torch.manual_seed(0)
    net = add_attention(DenoisingUNet(width=4), 1)
    with torch.no_grad():
        net.out.weight.normal_()
    deep = deepen_bottleneck(net, 2)
    x = torch.randn(1, 2, 64, 64)
    torch.testing.assert_close(deep(x), net(x))  # the new blocks start as the identity
    assert deep.config == {**net.config, "bottleneck_blocks": 2}
    with torch.no_grad():
        deep.bottleneck_blocks[0].conv2.weight.normal_()
        deeper = deepen_bottleneck(deep, 3)  # the existing blocks keep their weights, one new block
    torch.testing.assert_close(deeper(x), deep(x))
    assert not torch.allclose(deep(x), net(x))  # trained blocks do change the output
    with pytest.raises(ValueError, match="bottleneck_blocks must be at least the network's 2, got 1"):
        deepen_bottleneck(deep, 1)
    with pytest.raises(TypeError, match="DenoisingUNet"):
        deepen_bottleneck(UncertaintyUNet(6, 4), 2)
    path = save_model(deeper, tmp_path / "d.safetensors", task="denoising", architecture="DenoisingUNet")
    back = load_model(path, task="denoising")
    assert back.config["network"]["bottleneck_blocks"] == 3
    torch.testing.assert_close(back.on(torch.device("cpu"))(x), deeper(x))


def test_sliding_wiener_keeps_a_lattice_removes_noise_and_follows_the_noise_level():
    from hyperspy_partialscan.models.wiener import sliding_wiener

    g = torch.Generator().manual_seed(0)
    r = torch.arange(96.0)
    clean = (torch.cos(2 * torch.pi * r / 6)[:, None] * torch.cos(2 * torch.pi * r / 9)[None, :])[None, None] + 2.0
    noise = torch.randn(clean.shape, generator=g)
    for sd in (0.3, 1.0):
        y = sliding_wiener(clean + sd * noise, torch.tensor(sd**2), 32, 8)
        assert y.shape == clean.shape
        assert ((y - clean) ** 2).mean() < 0.15 * sd**2  # the noise power drops more than 6x
        assert abs(float(y.mean() - clean.mean())) < 0.05  # the mean level is kept
    # told there is no noise, it returns the frame; told far too much, it flattens it towards its local mean
    noisy = clean + 0.3 * noise
    torch.testing.assert_close(sliding_wiener(noisy, torch.tensor(0.0), 32, 8), noisy, atol=1e-4, rtol=0)
    flat = sliding_wiener(noisy, torch.tensor(1e6), 32, 8)
    assert flat.std() < 0.1 * clean.std()
    # a per-pixel variance map: the noisier half is smoothed more
    var = torch.full(clean.shape, 0.01)
    var[..., 48:] = 1.0
    y = sliding_wiener(clean + var.sqrt() * noise, var, 32, 8)
    assert ((y - clean)[..., 56:] ** 2).mean() > ((y - clean)[..., :40] ** 2).mean()
    # odd sizes and frames smaller than the window
    for shape in ((1, 1, 37, 53), (2, 1, 20, 20)):
        x = torch.randn(shape, generator=g)
        assert sliding_wiener(x, torch.tensor(1.0), 32, 8).shape == shape
    with pytest.raises(ValueError, match="multiple of hop"):
        sliding_wiener(noisy, torch.tensor(1.0), 30, 8)
    with pytest.raises(ValueError, match=r"shape \(N, 1, H, W\)"):
        sliding_wiener(noisy[0], torch.tensor(1.0))


def test_denoiser_wiener_channel_starts_unused_learns_and_round_trips(tmp_path):
    from hyperspy_partialscan.models import load_model, save_model
    from hyperspy_partialscan.models.growth import add_attention, add_wiener
    from hyperspy_partialscan.models.networks import DenoisingUNet, UncertaintyUNet

    torch.manual_seed(0)
    net = add_attention(DenoisingUNet(width=4), 1)
    with torch.no_grad():
        net.out.weight.normal_()
    guided = add_wiener(net, 16, 8)
    x = torch.rand(2, 2, 64, 64)
    torch.testing.assert_close(guided(x), net(x))  # the new channel's weights start at zero
    assert guided.config == {**net.config, "wiener": [16, 8]}
    with torch.no_grad():
        guided.enc[0][0].weight[:, -1].normal_()
    assert not torch.allclose(guided(x), net(x))
    # the output gate: fully open (and no residual), the output is the Wiener estimate of the frame
    from hyperspy_partialscan.models.features import NOISE_MAP_GAIN
    from hyperspy_partialscan.models.wiener import sliding_wiener

    gated = add_wiener(DenoisingUNet(width=4), 16, 8)
    with torch.no_grad():
        gated.gate.bias.fill_(1.0)
        torch.testing.assert_close(gated(x), sliding_wiener(x[:, :1], (x[:, 1:2] / NOISE_MAP_GAIN) ** 2, 16, 8))
    # the channel is a function of the frame computed in the forward pass: gradients reach the input through it
    xi = x.clone().requires_grad_(True)
    guided(xi).sum().backward()
    assert torch.isfinite(xi.grad).all() and xi.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="already has a Wiener channel"):
        add_wiener(guided)
    with pytest.raises(TypeError, match="DenoisingUNet"):
        add_wiener(UncertaintyUNet(6, 4))
    with pytest.raises(ValueError, match="multiple of hop"):
        DenoisingUNet(width=4, wiener=(20, 8))
    path = save_model(guided, tmp_path / "d.safetensors", task="denoising", architecture="DenoisingUNet")
    back = load_model(path, task="denoising")
    assert back.config["network"]["wiener"] == [16, 8]
    torch.testing.assert_close(back.on(torch.device("cpu"))(x), guided(x))


@pytest.mark.parametrize("task", ["completion", "denoising", "uncertainty"])
def test_shipped_models_record_every_training_stage(task):
    """Each shipped model's provenance chains back to its first run: every fine-tuning stage names the model it
    started from by SHA-256 and carries that model's training record, so the iterations add up."""
    from hyperspy_partialscan.models import list_models

    for name in list_models(task):
        lineage = load_model(name).lineage
        assert lineage and all(isinstance(r.get("iterations"), int) for r in lineage), name
        for record, earlier in zip(lineage, lineage[1:]):
            assert len(record["init"]["sha256"]) == 64 and record["init_training"] is earlier, name
        assert lineage[-1].get("init") is None and not lineage[-1].get("init_training"), name  # the first: from scratch


def test_interpolate_models_script_mixes_any_task(tmp_path):
    """scripts/interpolate_models.py: half-way between a denoiser and its fine-tune, saved as a denoising model."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from interpolate_models import main

    from hyperspy_partialscan.models.networks import DenoisingUNet

    torch.manual_seed(0)
    a, b = DenoisingUNet(width=4), DenoisingUNet(width=4)
    start = save_model(a, tmp_path / "start.safetensors", task="denoising", architecture="DenoisingUNet")
    record = {"iterations": 1, "init": {"name": "start", "sha256": load_model(start).sha256}}
    end = save_model(b, tmp_path / "end.safetensors", task="denoising", architecture="DenoisingUNet",
                     extra={"training": record})
    main([str(start), str(end), "0.5", str(tmp_path / "mid.safetensors")])
    mid = load_model(tmp_path / "mid.safetensors")
    assert mid.task == "denoising" and mid.config["interpolated"]["fraction"] == 0.5
    for key, value in mid.network.state_dict().items():
        assert torch.allclose(value, 0.5 * (a.state_dict()[key] + b.state_dict()[key]))
    with pytest.raises(SystemExit, match="was not fine-tuned from"):
        main([str(end), str(start), "0.5", str(tmp_path / "reverse.safetensors")])
