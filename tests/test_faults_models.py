"""Fault matrix of model files: tampered, truncated, pickled, mismatched, oversized, wrong-task, escaping names.

Every case asserts the outcome (error type and message fragment, or the exact
result) and that the model files are byte-identical afterwards.
"""

import errno
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from hyperspy_partialscan import models
from hyperspy_partialscan.models import MAX_CONFIG_BYTES, load_model, save_model
from hyperspy_partialscan.models.networks import DenoisingUNet, PartialScanGenerator


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if os.path.lexists(path) else None


def snapshot(folder):
    return {p.name: digest(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Two valid models (completion, denoising) made once; tests copy them."""
    folder = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    save_model(PartialScanGenerator(width=4, inner_blocks=1, outer_blocks=1), folder / "gen.safetensors",
               task="completion", architecture="PartialScanGenerator")
    save_model(DenoisingUNet(width=4), folder / "dn.safetensors", task="denoising", architecture="DenoisingUNet")
    save_model(DenoisingUNet(width=4), folder / "dn2.safetensors", task="denoising", architecture="DenoisingUNet")
    return folder


@pytest.fixture
def work(good, tmp_path):
    for f in good.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def config(work, name):
    return json.loads((work / f"{name}.json").read_text())


def write_config(work, name, cfg):
    (work / f"{name}.json").write_text(json.dumps(cfg))


def check_rejected(work, target, exc, fragment):
    before = snapshot(work)
    with pytest.raises(exc) as info:
        load_model(target)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert snapshot(work) == before


# --------------------------------------------------------------------------- weights damaged


@pytest.mark.parametrize("offset", [0, 7, 100, -100, -1])
@pytest.mark.parametrize("name", ["gen", "dn"])
def test_tampered_weights(name, offset, work):
    w = work / f"{name}.safetensors"
    raw = bytearray(w.read_bytes())
    raw[offset] ^= 0x01
    w.write_bytes(bytes(raw))
    check_rejected(work, w, ValueError, "weights and JSON do not belong together (sha256 mismatch")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
@pytest.mark.parametrize("rehash", [False, True])
def test_truncated_weights(fraction, rehash, work):
    """Truncated weights: a hash mismatch; with a matching hash (a consistent but broken pair): unreadable."""
    w = work / "dn.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: int(len(data) * fraction)])
    if rehash:
        cfg = config(work, "dn")
        cfg["sha256"] = sha(w)
        write_config(work, "dn", cfg)
    check_rejected(work, w, ValueError, "cannot be read as safetensors" if rehash else "do not belong together")


def test_pickled_weights_never_unpickled(work, tmp_path):
    """A torch pickle disguised as safetensors (hash matching): refused, and its payload never runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    w = work / "dn.safetensors"
    with open(w, "wb") as fh:
        pickle.dump({"weight": Payload()}, fh)
    cfg = config(work, "dn")
    cfg["sha256"] = sha(w)
    write_config(work, "dn", cfg)
    check_rejected(work, w, ValueError, "cannot be read as safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(value, work):
    from safetensors.torch import load_file, save_file

    w = work / "dn.safetensors"
    state = load_file(str(w))
    key = sorted(state)[0]
    state[key].view(-1)[0] = value
    save_file(state, str(w))
    cfg = config(work, "dn")
    cfg["sha256"] = sha(w)
    write_config(work, "dn", cfg)
    check_rejected(work, w, ValueError, "non-finite values")


def test_weights_of_another_model(work):
    """dn2's weights under dn's JSON: same architecture, but not the pair."""
    (work / "dn.safetensors").write_bytes((work / "dn2.safetensors").read_bytes())
    check_rejected(work, work / "dn.safetensors", ValueError, "do not belong together")


# --------------------------------------------------------------------------- configuration damaged


def _edit(change):
    def apply(cfg):
        change(cfg)
        return cfg
    return apply


CONFIGS = {
    "no_sha256": (_edit(lambda c: c.pop("sha256")), "the JSON records no sha256"),
    "empty_sha256": (_edit(lambda c: c.update(sha256="")), "the JSON records no sha256"),
    "wrong_sha256": (_edit(lambda c: c.update(sha256="0" * 64)), "sha256 mismatch"),
    "no_task": (_edit(lambda c: c.pop("task")), "lacks the required key 'task'"),
    "no_architecture": (_edit(lambda c: c.pop("architecture")), "lacks the required key 'architecture'"),
    "no_network": (_edit(lambda c: c.pop("network")), "lacks the required key 'network'"),
    "wrong_task": (_edit(lambda c: c.update(task="completion")), "is a denoising network"),
    "unknown_task": (_edit(lambda c: c.update(task="segmentation")), "is a denoising network"),
    "unknown_architecture": (_edit(lambda c: c.update(architecture="Transformer")), "unknown architecture"),
    "network_not_object": (_edit(lambda c: c.update(network=[1, 2])), "must be an object"),
    "network_unknown_argument": (_edit(lambda c: c["network"].update(depth=3)), "invalid network config"),
    "network_wider": (_edit(lambda c: c["network"].update(width=8)), "do not fit the architecture"),
    "network_huge": (_edit(lambda c: c["network"].update(width=200000)), "do not fit the architecture"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config(case, work):
    change, fragment = CONFIGS[case]
    write_config(work, "dn", change(config(work, "dn")))
    check_rejected(work, work / "dn.safetensors", ValueError, fragment)


RAW_CONFIGS = {
    "not_json": (b"{not json", "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "array": (b"[1, 2, 3]", "not a JSON object"),
    "string": (b'"completion"', "not a JSON object"),
    "invalid_utf8": (b'{"task": "\xff\xfe"}', "not valid JSON"),
    "deeply_nested": (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    "oversized": (b"{" + b" " * (MAX_CONFIG_BYTES + 1) + b"}", "over the limit"),
}


@pytest.mark.parametrize("case", sorted(RAW_CONFIGS))
def test_raw_config(case, work):
    raw, fragment = RAW_CONFIGS[case]
    (work / "dn.json").write_bytes(raw)
    check_rejected(work, work / "dn.safetensors", ValueError, fragment)


def test_oversized_config_not_parsed(work, monkeypatch):
    """The size limit is checked before the JSON is read and parsed."""
    (work / "dn.json").write_bytes(b"{" + b" " * (MAX_CONFIG_BYTES + 10) + b"}")
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed an oversized JSON"))
    check_rejected(work, work / "dn.safetensors", ValueError, "over the limit")


@pytest.mark.parametrize("missing", ["json", "safetensors"])
def test_missing_half(missing, work):
    (work / f"dn.{missing}").unlink()
    check_rejected(work, work / "dn.json" if missing == "safetensors" else work / "dn.safetensors",
                   FileNotFoundError, "missing" if missing == "json" else "does not exist")


@pytest.mark.parametrize("asked, name", [("denoising", "gen"), ("completion", "dn")])
def test_wrong_task_requested(asked, name, work):
    before = snapshot(work)
    with pytest.raises(ValueError, match=f"not a {asked} model"):
        load_model(work / f"{name}.safetensors", task=asked)
    assert snapshot(work) == before


# --------------------------------------------------------------------------- shipped-model names


@pytest.fixture
def weights_dir(work, tmp_path, monkeypatch):
    """A weights folder with one model, and a valid model outside it that a name must not reach."""
    shipped = tmp_path / "pkg" / "weights"
    shipped.mkdir(parents=True)
    for ext in ("safetensors", "json"):
        (shipped / f"dn.{ext}").write_bytes((work / f"dn.{ext}").read_bytes())
        (tmp_path / f"outside.{ext}").write_bytes((work / f"dn.{ext}").read_bytes())
        (tmp_path / "pkg" / f"outside.{ext}").write_bytes((work / f"dn.{ext}").read_bytes())
    monkeypatch.setattr(models, "WEIGHTS_DIR", shipped)
    monkeypatch.chdir(work)  # relative names do not exist as paths from here
    return shipped


@pytest.mark.parametrize("name", ["../outside", "../../outside", "..", ".", "sub/dn", "..\\outside", ".dn",
                                  "dn/../../outside", "", "/nonexistent/outside"])
def test_shipped_name_cannot_escape(name, weights_dir):
    before = snapshot(weights_dir)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        load_model(name)
    assert "unknown model" in str(info.value) or "does not exist" in str(info.value) or "folder" in str(info.value)
    assert snapshot(weights_dir) == before


def test_shipped_name_loads(weights_dir):
    assert load_model("dn").path == weights_dir / "dn.safetensors"


def test_list_models_skips_oversized(weights_dir):
    (weights_dir / "big.safetensors").write_bytes((weights_dir / "dn.safetensors").read_bytes())
    (weights_dir / "big.json").write_bytes(b"{" + b" " * (MAX_CONFIG_BYTES + 1) + b"}")
    assert models.list_models("denoising") == ["dn"]


@pytest.mark.parametrize("name", sorted(models.DEFAULT_MODELS.values()))
def test_shipped_models_carry_sha256(name):
    cfg = json.loads((models.WEIGHTS_DIR / f"{name}.json").read_text())
    assert cfg["sha256"] == sha(models.WEIGHTS_DIR / f"{name}.safetensors")
    assert models.ARCHITECTURE_TASKS[cfg["architecture"]] == cfg["task"]


# --------------------------------------------------------------------------- saving


def _raise_half_way(real, exc):
    def writer(obj, path, *args, **kwargs):
        real(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise exc
    return writer


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk_full", "interrupt"])
def test_failed_save_weights_keeps_previous_model(exc, work, monkeypatch):
    import safetensors.torch as st

    before = snapshot(work)
    monkeypatch.setattr(st, "save_file", _raise_half_way(st.save_file, exc))
    with pytest.raises(type(exc)):
        save_model(DenoisingUNet(width=4), work / "dn.safetensors", task="denoising", architecture="DenoisingUNet")
    monkeypatch.undo()
    assert snapshot(work) == before  # no temporary left either
    assert load_model(work / "dn.safetensors").task == "denoising"


def test_failed_save_config_keeps_previous_model(work, monkeypatch):
    before = snapshot(work)

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(OSError, match="No space"):
        save_model(DenoisingUNet(width=4), work / "dn.safetensors", task="denoising", architecture="DenoisingUNet")
    monkeypatch.undo()
    assert snapshot(work) == before


def test_save_replaces_pair(work):
    torch.manual_seed(5)
    net = DenoisingUNet(width=4)
    path = save_model(net, work / "dn.safetensors", task="denoising", architecture="DenoisingUNet")
    m = load_model(path, task="denoising")
    assert m.sha256 == sha(path) == config(work, "dn")["sha256"]
    for k, v in net.state_dict().items():
        assert torch.equal(m.network.state_dict()[k], v)
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["gen.safetensors", "gen.json", "dn.safetensors", "dn.json", "dn2.safetensors", "dn2.json"])


def test_cache_sees_a_changed_config(work):
    """The cache is keyed by the weights' and the JSON's hashes: an edited JSON is checked again."""
    assert load_model(work / "dn.safetensors").task == "denoising"
    cfg = config(work, "dn")
    cfg["sha256"] = "f" * 64
    write_config(work, "dn", cfg)
    check_rejected(work, work / "dn.safetensors", ValueError, "do not belong together")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_save_refuses_non_finite_weights(value, work):
    """A diverged network is not saved: the previous model at that path stays, and nothing else is written."""
    net = DenoisingUNet(width=4)
    with torch.no_grad():
        next(iter(net.parameters())).view(-1)[0] = value
    before = snapshot(work)
    with pytest.raises(ValueError, match="refusing to save .* non-finite values"):
        save_model(net, work / "dn.safetensors", task="denoising", architecture="DenoisingUNet")
    assert snapshot(work) == before
