"""HyperSpy extension registration: signal types, the extension yaml, entry point, wheel contents."""

import importlib
import importlib.metadata
import importlib.resources
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOP_YAML = REPO / "hyperspy_extension.yaml"


def _packaged_yaml():
    return importlib.resources.files("hyperspy_partialscan") / "hyperspy_extension.yaml"


def test_import_hyperspy_api_with_extension():
    import hyperspy.api as hs

    assert hasattr(hs, "load")
    import hyperspy_partialscan

    assert hyperspy_partialscan.to_partial_scan is not None


def test_print_known_signal_types_lists_partial_scan(capsys):
    import hyperspy.api as hs

    hs.print_known_signal_types()
    out = capsys.readouterr().out
    assert "partial_scan" in out
    assert "PartialScan2D" in out
    assert "hyperspy_partialscan" in out


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("signal_type", ["partial_scan", "PartialScan", "partial scan"])
def test_set_signal_type(lazy, signal_type):
    import hyperspy.api as hs

    from hyperspy_partialscan.signals import LazyPartialScan2D, PartialScan2D

    s = hs.signals.Signal2D(np.zeros((2, 8, 8), np.float32))
    if lazy:
        s = s.as_lazy()
    s.set_signal_type(signal_type)
    assert type(s) is (LazyPartialScan2D if lazy else PartialScan2D)
    assert s.metadata.Signal.signal_type == "partial_scan"
    # and back
    s.set_signal_type("")
    assert not isinstance(s, PartialScan2D)


def test_packaged_yaml_identical_to_top_level():
    if not TOP_YAML.is_file():
        pytest.skip("not a source checkout: no top-level hyperspy_extension.yaml")
    packaged = _packaged_yaml()
    assert packaged.is_file()
    assert packaged.read_bytes() == TOP_YAML.read_bytes()


def test_source_yamls_are_real_identical_files():
    """Both copies are regular files (no symbolic link: Windows checkouts and some archives drop links)."""
    package_yaml = REPO / "hyperspy_partialscan" / "hyperspy_extension.yaml"
    if not TOP_YAML.exists() and not TOP_YAML.is_symlink():
        pytest.skip("not a source checkout: no top-level hyperspy_extension.yaml")
    for path in (TOP_YAML, package_yaml):
        assert not path.is_symlink(), f"{path.relative_to(REPO)} is a symbolic link; it must be a real file"
        assert path.is_file()
    assert package_yaml.read_bytes() == TOP_YAML.read_bytes(), "the two hyperspy_extension.yaml files differ"


def test_yaml_parses_and_registered_classes_import():
    from hyperspy.signal import BaseSignal

    spec = yaml.safe_load(_packaged_yaml().read_text(encoding="utf-8"))
    assert set(spec) == {"signals"}
    assert set(spec["signals"]) == {"PartialScan2D", "LazyPartialScan2D"}
    for name, entry in spec["signals"].items():
        module = importlib.import_module(entry["module"])
        cls = getattr(module, name)
        assert issubclass(cls, BaseSignal)
        assert cls._signal_type == entry["signal_type"] == "partial_scan"
        assert cls._signal_dimension == entry["signal_dimension"] == 2
        assert bool(cls._lazy) is entry["lazy"]
        assert entry["dtype"] == "real"
        assert set(entry["signal_type_aliases"]) == set(cls._alias_signal_types) == {"PartialScan", "partial scan"}


def test_entry_point_exposes_package():
    eps = importlib.metadata.entry_points(group="hyperspy.extensions")
    ours = [ep for ep in eps if ep.name == "hyperspy_partialscan"]
    assert len(ours) == 1
    assert ours[0].value == "hyperspy_partialscan"
    assert ours[0].load() is importlib.import_module("hyperspy_partialscan")


def test_version():
    from packaging.version import Version

    import hyperspy_partialscan

    assert isinstance(hyperspy_partialscan.__version__, str)
    Version(hyperspy_partialscan.__version__)  # PEP 440


@pytest.mark.slow
def test_wheel_contains_identical_yaml(tmp_path):
    """Build a wheel offline from a copy of the source tree; the yaml must be a real file in it."""
    if not (REPO / "pyproject.toml").is_file() or not TOP_YAML.is_file():
        pytest.skip("not a source checkout")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "LICENSE", "README.md", "hyperspy_extension.yaml"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "hyperspy_partialscan",
        src / "hyperspy_partialscan",
        symlinks=True,  # copy the tree as it is (a link, should one come back, stays a link)
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    if not (src / "README.md").exists():  # pyproject's readme; the test is about the yaml
        (src / "README.md").write_text("hyperspy_partialscan\n")
    out = tmp_path / "wheel"
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(out), "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list(out.glob("hyperspy_partialscan-*.whl"))
    assert len(wheels) == 1
    import hyperspy_partialscan

    assert wheels[0].name.split("-")[1] == hyperspy_partialscan.__version__
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        assert "hyperspy_partialscan/hyperspy_extension.yaml" in names
        info = zf.getinfo("hyperspy_partialscan/hyperspy_extension.yaml")
        assert not stat.S_ISLNK(info.external_attr >> 16)  # a file, not a link
        assert zf.read("hyperspy_partialscan/hyperspy_extension.yaml") == TOP_YAML.read_bytes()
        ep = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert len(ep) == 1
        text = zf.read(ep[0]).decode()
        assert "[hyperspy.extensions]" in text
        assert "hyperspy_partialscan = hyperspy_partialscan" in text
