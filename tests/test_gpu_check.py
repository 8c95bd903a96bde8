"""benchmarks/gpu_check.py: the clean no-GPU exit, the CPU self-test and the mismatch detection."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _run(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def _mps_available():
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def test_no_gpu_clean_exit():
    if _mps_available():
        pytest.skip("Apple MPS is available here: the script would run the real check")
    hidden = {"CUDA_VISIBLE_DEVICES": ""}  # hide any CUDA device from the subprocess
    res = _run(env=hidden)
    assert res.returncode == gpu_check.EXIT_OK, res.stdout + res.stderr
    assert res.stdout.strip() == gpu_check.NO_GPU_MESSAGE == "no GPU (CUDA/MPS) available: nothing to check"
    assert "Traceback" not in res.stderr
    strict = _run("--require-gpu", env=hidden)
    assert strict.returncode == gpu_check.EXIT_NO_GPU == 3
    assert gpu_check.NO_GPU_MESSAGE in strict.stdout


def test_unavailable_device_is_a_one_line_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = _run("--device", "cuda", "--quick", env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == gpu_check.EXIT_USAGE == 2
    assert res.stderr.strip().count("\n") == 0 and "CUDA is not available" in res.stderr


@pytest.mark.slow
def test_cpu_self_test(tmp_path):
    out = tmp_path / "reports" / "gpu_check.json"
    res = _run("--device", "cpu", "--quick", "--precision", "float32,bfloat16", "--output", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "gpu_check: passed" in res.stdout
    report = json.loads(out.read_text())
    assert report["result"] == "passed"
    assert not [p for p in out.parent.iterdir() if p != out]  # no temporary file left beside the report
    checks = {(r["check"], r["precision"]): r for r in report["checks"]}
    for precision in ("float32", "bfloat16"):
        for name in ("completion", "denoising, blind", "denoising, dose known", "training, 3 Adam steps"):
            row = checks[(name, precision)]
            assert row["status"] == "ok" and row["relative"] <= row["tolerance"]
    assert checks[("completion", "float32")]["relative"] == 0.0  # CPU against CPU, same precision
    assert checks[("completion", "bfloat16")]["relative"] > 0  # reduced precision really ran
    uncertainty = checks[("completion, uncertainty", "float32")]["status"]
    assert uncertainty == ("ok" if gpu_check.has_uncertainty() else "skipped (not available)")
    # frames per second for every size x batch x precision
    points = {(r["size"], r["batch"], r["precision"]) for r in report["throughput"]}
    assert points == {(128, b, p) for b in (1, 2) for p in ("float32", "bfloat16")}
    for r in report["throughput"]:
        assert isinstance(r["e2e_fps"], float) and r["e2e_fps"] > 0
        assert isinstance(r["net_fps"], float) and r["net_fps"] > 0
    # the markdown report of the same results
    md = tmp_path / "gpu_check.md"
    md.write_text(gpu_check.markdown(report))
    assert "| cpu | bfloat16 | 128² | 2 |" in md.read_text()


def test_compare_detects_a_mismatch():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 10, (2, 32, 32)).astype(np.float32)
    same = gpu_check.compare(ref, ref.copy(), 1e-3)
    assert same["ok"] and same["relative"] == 0
    small = ref + 1e-5 * np.ptp(ref) * rng.standard_normal(ref.shape).astype(np.float32)  # ~4e-5 of the range
    assert gpu_check.compare(ref, small, 1e-3)["ok"]
    perturbed = ref.copy()
    perturbed[1, 5, 7] += 0.02 * np.ptp(ref)  # one pixel off by 2 % of the range
    bad = gpu_check.compare(ref, perturbed, 1e-3)
    assert not bad["ok"] and bad["relative"] == pytest.approx(0.02, rel=1e-3)
    assert gpu_check.compare(ref, perturbed, 3e-2)["ok"]
    holes = ref.copy()
    holes[0, 0, 0] = np.nan
    assert not gpu_check.compare(ref, holes, 1.0)["ok"]
    assert not gpu_check.compare(ref, ref[:1], 1.0)["ok"]
    assert gpu_check.worst([same, bad])["ok"] is False


def test_compare_losses_detects_a_mismatch():
    ref = [0.30, 0.25, 0.21]
    assert gpu_check.compare_losses(ref, [0.30, 0.25, 0.21], 1e-3)["ok"]
    assert not gpu_check.compare_losses(ref, [0.30, 0.25, 0.23], 2e-2)["ok"]
    assert not gpu_check.compare_losses(ref, [0.30, float("nan"), 0.21], 1.0)["ok"]


def test_mismatch_makes_the_script_fail(tmp_path, monkeypatch, capsys):
    """A device whose completion is off: main() reports it and returns 1."""
    import hyperspy_partialscan as hps

    real = hps.complete_partial_scan

    def off_on_bfloat16(signal, *args, precision=None, **kwargs):
        out = real(signal, *args, precision=precision, **kwargs)
        if precision == "bfloat16":
            out.data[..., 3, 3] += 0.5 * np.ptp(out.data)
        return out

    monkeypatch.setattr(hps, "complete_partial_scan", off_on_bfloat16)
    out = tmp_path / "report.md"
    rc = gpu_check.main(["--device", "cpu", "--quick", "--precision", "float32,bfloat16", "--sizes", "32",
                         "--batch-sizes", "1", "--skip-end-to-end", "--train-steps", "1", "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == gpu_check.EXIT_MISMATCH == 1
    assert "MISMATCH: completion on cpu (bfloat16)" in text
    report = out.read_text()
    assert "FAILED" in report and "| completion | cpu | float32 |" in report


def test_write_atomic_replaces_whole_file(tmp_path):
    target = tmp_path / "r.md"
    target.write_text("old")
    gpu_check.write_atomic(target, "new report\n")
    assert target.read_text() == "new report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]
