"""Fault matrix of the command line: bad inputs, mistaken outputs, failing writes, invalid numbers.

Every case asserts the outcome (exit status and a message fragment, or the
exact result) and that the input and any previous output are byte-identical
afterwards.
"""

import errno
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pshelpers import make_signal

from hyperspy_partialscan import cli

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def run(args, capsys):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def digest(path):
    """SHA-256 of a file, or of every file (name and bytes) below a folder; None if missing."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def snapshot(folder):
    """Digest of every entry directly in ``folder`` (temporaries left behind show up as new names)."""
    return {p.name: digest(p) for p in Path(folder).iterdir()}


def one_error_line(err):
    """stderr holds exactly one line, an ``error:`` one (notes aside); return it."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Good files, made once: a partial scan (2 frames of 32x32) and a full image."""
    import hyperspy_partialscan as hps

    folder = tmp_path_factory.mktemp("sources")
    full = make_signal(nav_shape=(2,), size=32)
    full.save(folder / "full.hspy")
    hps.to_partial_scan(full, "random", 0.3, seed=1, show_progressbar=False).save(folder / "partial.hspy")
    return folder


@pytest.fixture
def work(sources, tmp_path):
    """A fresh folder with copies of the good files."""
    for f in sources.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    return tmp_path


COMMANDS = {
    "complete": ["complete", "{inp}", "{out}", "--method", "linear", "--no-progressbar"],
    "simulate": ["simulate", "{inp}", "{out}", "--seed", "0", "--no-progressbar"],
    "denoise": ["denoise", "{inp}", "{out}", "--method", "gaussian", "--no-progressbar"],
    "adaptive": ["adaptive", "{inp}", "{out}", "--planner", "static", "--steps", "1", "--no-progressbar"],
}
INPUT_OF = {"complete": "partial.hspy", "simulate": "full.hspy", "denoise": "full.hspy", "adaptive": "full.hspy"}


def command(name, inp, out, *extra):
    return [a.format(inp=inp, out=out) for a in COMMANDS[name]] + list(extra)


# --------------------------------------------------------------------------- unreadable inputs


def _truncate(frac):
    def make(work):
        data = (work / "partial.hspy").read_bytes()
        (work / "bad.hspy").write_bytes(data[: int(len(data) * frac)])
        return work / "bad.hspy"
    return make


def _write(name, data):
    def make(work):
        (work / name).write_bytes(data)
        return work / name
    return make


def _folder(name):
    def make(work):
        (work / name).mkdir()
        return work / name
    return make


_RANDOM = np.random.default_rng(0).bytes(4096)
BAD_INPUTS = {
    "truncated_10": (_truncate(0.10), "cannot read"),
    "truncated_50": (_truncate(0.50), "cannot read"),
    "truncated_99": (_truncate(0.99), "cannot read"),
    "random_hspy": (_write("r.hspy", _RANDOM), "cannot read"),
    "random_dm4": (_write("r.dm4", _RANDOM), "cannot read"),
    "random_tif": (_write("r.tif", _RANDOM), "cannot read"),
    "zero_byte_hspy": (_write("z.hspy", b""), "cannot read"),
    "zero_byte_tif": (_write("z.tif", b""), "cannot read"),
    "text_as_h5": (_write("t.h5", b"just some text\n"), "cannot read"),
    "folder": (_folder("dir.hspy"), "is a folder"),
    "empty_zspy_folder": (_folder("empty.zspy"), "cannot read"),
    "missing": (lambda work: work / "missing.hspy", "does not exist"),
}


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_unreadable_input(kind, cmd, work, capsys):
    make, fragment = BAD_INPUTS[kind]
    inp = make(work)
    before = snapshot(work)
    rc, out, err = run(command(cmd, inp, work / "out.hspy"), capsys)
    assert rc == 2
    line = one_error_line(err)
    assert fragment in line and inp.name in line
    assert "ERROR" not in err and "hyperspy.io" not in err  # HyperSpy's own log line is not repeated
    assert snapshot(work) == before  # input untouched, no output, no temporary


def test_unreadable_permission(work, capsys):
    inp = work / "partial.hspy"
    inp.chmod(0)
    try:
        if os.access(inp, os.R_OK):
            pytest.skip("running as root: chmod 000 does not make the file unreadable")
        before = snapshot(work)
        rc, _, err = run(command("complete", inp, work / "out.hspy"), capsys)
        assert rc == 2 and "not readable" in one_error_line(err)
        assert snapshot(work) == before
    finally:
        inp.chmod(0o644)


# --------------------------------------------------------------------------- output = input


def _alias(kind, work, inp):
    if kind == "same_path":
        return inp
    if kind == "relative_path":
        return Path(os.path.relpath(inp))
    if kind == "dotted_path":
        return inp.parent / "." / inp.name
    if kind == "symlink":
        (work / "link.hspy").symlink_to(inp)
        return work / "link.hspy"
    if kind == "hard_link":
        os.link(inp, work / "hard.hspy")
        return work / "hard.hspy"
    raise AssertionError(kind)


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("alias", ["same_path", "relative_path", "dotted_path", "symlink", "hard_link"])
@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_output_is_input(cmd, alias, overwrite, work, capsys):
    inp = work / INPUT_OF[cmd]
    out = _alias(alias, work, inp)
    before = snapshot(work)
    rc, _, err = run(command(cmd, inp, out, *(["--overwrite"] if overwrite else [])), capsys)
    assert rc == 2
    assert "is the input file" in one_error_line(err)
    assert snapshot(work) == before


def test_hard_link_subprocess(work):
    """The issue's reproduction, as a user runs it."""
    inp = work / "partial.hspy"
    os.link(inp, work / "o.hspy")
    before = digest(inp)
    res = subprocess.run([sys.executable, "-m", "hyperspy_partialscan.cli", "complete", str(inp), str(work / "o.hspy"),
                          "--method", "linear", "--overwrite", "--no-progressbar"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 2
    assert "is the input file" in one_error_line(res.stderr)
    assert digest(inp) == before


# --------------------------------------------------------------------------- the output's format and place


@pytest.mark.parametrize("name", ["out.xyz", "out.txt", "out.csv", "out.foo"])
@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_unwritable_format_refused_before_compute(cmd, name, work, capsys, monkeypatch):
    import hyperspy_partialscan.completion as completion

    def boom(*a, **k):
        raise AssertionError("computed before the output format was checked")

    monkeypatch.setattr(completion, "complete_partial_scan", boom)
    before = snapshot(work)
    rc, _, err = run(command(cmd, work / INPUT_OF[cmd], work / name), capsys)
    assert rc == 2
    assert "no RosettaSciIO writer" in one_error_line(err)
    assert snapshot(work) == before


@pytest.mark.parametrize("case", ["missing_folder", "folder_as_output", "exists_no_overwrite"])
def test_bad_output_place(case, work, capsys):
    inp = work / "partial.hspy"
    if case == "missing_folder":
        out, fragment, extra = work / "nowhere" / "o.hspy", "does not exist", []
    elif case == "folder_as_output":
        (work / "keep.hspy").mkdir()
        (work / "keep.hspy" / "precious.txt").write_text("do not delete")
        out, fragment, extra = work / "keep.hspy", "is a folder", ["--overwrite"]
    else:
        (work / "old.hspy").write_bytes(b"previous result")
        out, fragment, extra = work / "old.hspy", "--overwrite", []
    before = snapshot(work)
    rc, _, err = run(command("complete", inp, out, *extra), capsys)
    assert rc == 2 and fragment in one_error_line(err)
    assert snapshot(work) == before


# --------------------------------------------------------------------------- failures while writing


def _previous_output(work, ext):
    """A previous, valid completion at out.EXT (a file, or a .zspy folder)."""
    import hyperspy.api as hs

    prev = work / f"out{ext}"
    s = hs.load(work / "full.hspy")
    s.save(prev)
    return prev


def _failing_save(exc, fraction=0.5):
    """A ``save`` that writes part of the file (or folder) and then raises ``exc``."""
    from hyperspy.signal import BaseSignal

    real = BaseSignal.save

    def save(self, filename, *args, **kwargs):
        real(self, filename, *args, **kwargs)
        path = Path(filename)
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * fraction)])
        raise exc

    return save


FAILURES = {
    "disk_full": (OSError(errno.ENOSPC, "No space left on device"), 2, "No space left on device"),
    "permission": (PermissionError(errno.EACCES, "Permission denied"), 2, "Permission denied"),
    "memory": (MemoryError(), 2, "out of memory"),
    "runtime": (RuntimeError("HDF5 close failed"), 2, "RuntimeError: HDF5 close failed"),
    "interrupt": (KeyboardInterrupt(), 130, "interrupted"),
}


@pytest.mark.parametrize("ext", [".hspy", ".zspy"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_write_keeps_previous_output(failure, ext, work, capsys, monkeypatch):
    from hyperspy.signal import BaseSignal

    exc, status, fragment = FAILURES[failure]
    prev = _previous_output(work, ext)
    before = snapshot(work)
    monkeypatch.setattr(BaseSignal, "save", _failing_save(exc))
    rc, _, err = run(command("complete", work / "partial.hspy", prev, "--overwrite"), capsys)
    monkeypatch.undo()
    assert rc == status
    assert fragment in one_error_line(err)
    assert snapshot(work) == before  # previous output intact, temporary removed


@pytest.mark.parametrize("lazy", [False, True])
def test_failing_compute_keeps_previous_output(lazy, work, capsys):
    """A frame with no sampled pixel fails the completion (mid-compute when lazy)."""
    import hyperspy.api as hs

    s = hs.load(work / "partial.hspy")
    s.data[1] = np.nan
    s.save(work / "allnan_frame.hspy")
    prev = _previous_output(work, ".hspy")
    before = snapshot(work)
    rc, _, err = run(command("complete", work / "allnan_frame.hspy", prev, "--overwrite",
                             *(["--lazy"] if lazy else [])), capsys)
    assert rc == 2
    assert "no sampled pixel" in one_error_line(err)
    assert snapshot(work) == before


@pytest.mark.parametrize("ext", [".hspy", ".zspy", ".tif", ".npy"])
def test_overwrite_replaces_previous_output(ext, work, capsys):
    """--overwrite on success: the output is the new result, exactly, and no temporary is left."""
    import hyperspy.api as hs

    import hyperspy_partialscan as hps

    prev = _previous_output(work, ext)
    rc, _, err = run(command("complete", work / "partial.hspy", prev, "--overwrite"), capsys)
    assert rc == 0, err
    expected = hps.complete_partial_scan(hs.load(work / "partial.hspy"), "linear", show_progressbar=False)
    got = np.load(prev) if ext == ".npy" else hs.load(prev).data
    np.testing.assert_allclose(got, expected.data, rtol=1e-6)
    assert sorted(p.name for p in work.iterdir()) == sorted(["full.hspy", "partial.hspy", prev.name])


# --------------------------------------------------------------------------- invalid numbers


TRAIN = ["train", "--synthetic", "1", "--out", "{work}/run"]
TRAIN_DN = ["train-denoiser", "--synthetic", "1", "--out", "{work}/run"]
SIM = ["simulate", "{work}/full.hspy", "{work}/o.hspy"]
COMP = ["complete", "{work}/partial.hspy", "{work}/o.hspy", "--method", "linear"]
DEN = ["denoise", "{work}/full.hspy", "{work}/o.hspy", "--method", "gaussian"]
FIT = ["fit-denoiser", "{work}/full.hspy", "{work}/m.safetensors"]
DEMO = ["demo", "--output-dir", "{work}/demo"]
ADA = ["adaptive", "{work}/full.hspy", "{work}/o.hspy", "--planner", "static"]

NUMBERS = [
    (DEN + ["--sigma", "nan"], "--sigma must be a positive number, got nan"),
    (DEN + ["--sigma", "-1"], "--sigma must be a positive number, got -1"),
    (DEN + ["--sigma", "0"], "--sigma must be a positive number, got 0"),
    (DEN + ["--sigma", "inf"], "--sigma must be a positive number, got inf"),
    (DEN + ["--navigation-chunks", "0"], "--navigation-chunks must be an integer >= 1, got 0"),
    (DEN + ["--network-batch-size", "0"], "--network-batch-size must be an integer >= 1, got 0"),
    (FIT + ["--sigma", "nan"], "--sigma must be a positive number"),
    (FIT + ["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (FIT + ["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (TRAIN + ["--iterations", "0"], "--iterations must be an integer >= 1, got 0"),
    (TRAIN + ["--iterations", "-5"], "--iterations must be an integer >= 1, got -5"),
    (TRAIN + ["--max-minutes", "-1"], "--max-minutes must be a positive number, got -1"),
    (TRAIN + ["--max-minutes", "nan"], "--max-minutes must be a positive number, got nan"),
    (TRAIN + ["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (TRAIN + ["--crop", "0"], "--crop must be an integer >= 16, got 0"),
    (TRAIN + ["--width", "0"], "--width must be an integer >= 1, got 0"),
    (TRAIN + ["--lr", "0"], "--lr must be a positive number, got 0"),
    (TRAIN + ["--lr", "nan"], "--lr must be a positive number, got nan"),
    (TRAIN + ["--synthetic", "-1"], "--synthetic must be an integer >= 0, got -1"),
    (TRAIN + ["--lattices", "-1"], "--lattices must be an integer >= 0, got -1"),
    (TRAIN + ["--adaptive-fraction", "2"], "--adaptive-fraction must be a number in [0, 1], got 2"),
    (TRAIN + ["--inner-blocks", "0"], "--inner-blocks must be an integer >= 1, got 0"),
    (TRAIN + ["--lattice-spacing", "30", "20"], "--lattice-spacing must be LOW <= HIGH, got 30 20"),
    (TRAIN + ["--lattice-spacing", "0", "20"], "--lattice-spacing must be a positive number, got 0"),
    (TRAIN + ["--threads", "0"], "--threads must be an integer >= 1, got 0"),
    (TRAIN + ["--max-frames-per-file", "0"], "--max-frames-per-file must be an integer >= 1, got 0"),
    (TRAIN + ["--name", "../escape"], "--name must be a plain file name"),
    (TRAIN_DN + ["--iterations", "0"], "--iterations must be an integer >= 1, got 0"),
    (TRAIN_DN + ["--invert", "2"], "--invert must be a number in [0, 1], got 2"),
    (TRAIN_DN + ["--dose-range", "5", "1"], "--dose-range must be LOW <= HIGH, got 5 1"),
    (TRAIN_DN + ["--dose-range", "0", "10"], "--dose-range must be a positive number, got 0"),
    (TRAIN_DN + ["--context", "0"], "--context must be an integer >= 1, got 0"),
    (SIM + ["--coverage", "nan"], "--coverage must be a number in (0, 1], got nan"),
    (SIM + ["--coverage", "-0.1"], "--coverage must be a number in (0, 1], got -0.1"),
    (SIM + ["--dose", "0"], "--dose must be a positive number, got 0"),
    (SIM + ["--dose", "nan"], "--dose must be a positive number, got nan"),
    (SIM + ["--seed", "-3"], "--seed must be an integer >= 0, got -3"),
    (SIM + ["--navigation-chunks", "0"], "--navigation-chunks must be an integer >= 1, got 0"),
    (COMP + ["--navigation-chunks", "-2"], "--navigation-chunks must be an integer >= 1, got -2"),
    (COMP + ["--unscanned-value", "nan"], "--unscanned-value must be a finite number, got nan"),
    (DEMO + ["--size", "0"], "--size must be an integer >= 16, got 0"),
    (DEMO + ["--coverage", "0"], "--coverage must be a number in (0, 1], got 0"),
    (ADA + ["--steps", "-1"], "--steps must be an integer >= 0, got -1"),
    (ADA + ["--initial-fraction", "0"], "--initial-fraction must be a number in (0, 1], got 0"),
    (ADA + ["--coverage", "1"], "coverage must be"),
    (ADA + ["--navigation-chunks", "0"], "--navigation-chunks must be an integer >= 1, got 0"),
    (ADA + ["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize("args, message", NUMBERS, ids=[" ".join(a[0:1] + a[-2:]) for a, _ in NUMBERS])
def test_invalid_numbers(args, message, work, capsys):
    before = snapshot(work)
    rc, out, err = run([a.format(work=work) for a in args], capsys)
    assert rc == 2
    assert message in one_error_line(err)
    assert out == ""
    assert snapshot(work) == before  # nothing computed, nothing written


# --------------------------------------------------------------------------- usage errors


USAGE = [
    (["complete", "{work}/partial.hspy", "{work}/o.hspy", "--methd", "linear"], "complete --help"),
    (["complete", "{work}/partial.hspy", "{work}/o.hspy", "--method", "magic"], "complete --help"),
    (["complete", "{work}/partial.hspy"], "complete --help"),
    (["denoise", "{work}/full.hspy", "{work}/o.hspy", "--sigma", "abc"], "denoise --help"),
    (["train", "--iterations", "1.5", "--out", "{work}/run"], "train --help"),
    (["no-such-command"], "hyperspy-partialscan --help"),
    ([], "hyperspy-partialscan --help"),
]


@pytest.mark.parametrize("args, hint", USAGE)
def test_usage_errors_one_line(args, hint, work, capsys):
    before = snapshot(work)
    rc, out, err = run([a.format(work=work) for a in args], capsys)
    assert rc == 2
    assert hint in one_error_line(err) and "usage:" not in err
    assert snapshot(work) == before


# --------------------------------------------------------------------------- training run folders


EARLIER_RUN = {"checkpoint": "checkpoint.pt", "validation": "validation.csv", "model": "{name}.safetensors"}
TRAINERS = {"train": ("train_completion", "completion_model"), "train-denoiser": ("train_denoiser", "denoising_model")}


def _earlier_run(work, name, which):
    run_dir = work / "run"
    run_dir.mkdir()
    (run_dir / EARLIER_RUN[which].format(name=name)).write_bytes(b"earlier run, 400 iterations")
    (run_dir / "notes.txt").write_text("the user's own file")
    return run_dir


def _fake_trainer(calls, fail=False):
    """Stands in for the training functions: writes a run's files, optionally fails half-way."""

    def trainer(frames, out, *args, name="model", **kwargs):
        calls.append(kwargs.get("resume"))
        out = Path(out)
        (out / "validation.csv").write_text("iteration,psnr\n1,20\n")
        (out / "checkpoint.pt").write_bytes(b"new checkpoint")
        if fail:
            raise RuntimeError("diverged")
        (out / f"{name}.safetensors").write_bytes(b"new model")
        return out / f"{name}.safetensors"

    return trainer


def _train(cmd, work, capsys, monkeypatch, which, *flags, fail=False):
    """Run ``cmd`` (its training function faked) in a run folder holding an earlier run's ``which`` file.

    Returns (exit status, stderr, the fake's calls, the run folder, its snapshot before, the model name).
    """
    import hyperspy_partialscan.training as training

    func, name = TRAINERS[cmd]
    calls = []
    monkeypatch.setattr(training, func, _fake_trainer(calls, fail=fail))
    run_dir = _earlier_run(work, name, which)
    before = snapshot(run_dir)
    rc, _, err = run([cmd, "--synthetic", "1", "--out", run_dir, "--no-progressbar", *flags], capsys)
    return rc, err, calls, run_dir, before, name


@pytest.mark.parametrize("which", sorted(EARLIER_RUN))
@pytest.mark.parametrize("cmd", sorted(TRAINERS))
def test_training_refuses_earlier_run(cmd, which, work, capsys, monkeypatch):
    rc, err, calls, run_dir, before, name = _train(cmd, work, capsys, monkeypatch, which)
    assert rc == 2
    line = one_error_line(err)
    assert "--resume" in line and "--overwrite" in line and EARLIER_RUN[which].format(name=name) in line
    assert calls == [] and snapshot(run_dir) == before


@pytest.mark.parametrize("cmd", sorted(TRAINERS))
def test_training_resume_and_overwrite_exclusive(cmd, work, capsys, monkeypatch):
    rc, err, calls, run_dir, before, _ = _train(cmd, work, capsys, monkeypatch, "checkpoint", "--resume", "--overwrite")
    assert rc == 2 and "exclude each other" in one_error_line(err)
    assert calls == [] and snapshot(run_dir) == before


@pytest.mark.parametrize("which", sorted(EARLIER_RUN))
@pytest.mark.parametrize("cmd", sorted(TRAINERS))
def test_training_overwrite_starts_afresh(cmd, which, work, capsys, monkeypatch):
    rc, err, calls, run_dir, _, name = _train(cmd, work, capsys, monkeypatch, which, "--overwrite")
    assert rc == 0, err
    assert calls == [False]
    assert (run_dir / "validation.csv").read_text() == "iteration,psnr\n1,20\n"  # one run's log, not mixed
    assert (run_dir / "checkpoint.pt").read_bytes() == b"new checkpoint"
    assert (run_dir / f"{name}.safetensors").read_bytes() == b"new model"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["checkpoint.pt", "validation.csv", f"{name}.safetensors", "notes.txt"])


@pytest.mark.parametrize("which", sorted(EARLIER_RUN))
@pytest.mark.parametrize("cmd", sorted(TRAINERS))
def test_training_overwrite_failure_restores_earlier_run(cmd, which, work, capsys, monkeypatch):
    rc, err, calls, run_dir, before, _ = _train(cmd, work, capsys, monkeypatch, which, "--overwrite", fail=True)
    assert rc == 2 and "diverged" in one_error_line(err)
    assert calls == [False] and snapshot(run_dir) == before


@pytest.mark.parametrize("cmd", sorted(TRAINERS))
def test_training_resume_continues(cmd, work, capsys, monkeypatch):
    rc, err, calls, run_dir, _, _ = _train(cmd, work, capsys, monkeypatch, "checkpoint", "--resume")
    assert rc == 0, err
    assert calls == [True]
    assert (run_dir / "notes.txt").read_text() == "the user's own file"


def test_train_denoiser_rerun_refused_for_real(work, capsys):
    """A real (tiny) run, then the same command again: refused, the first run's files unchanged."""
    args = ["train-denoiser", "--synthetic", "1", "--iterations", "2", "--batch-size", "1", "--crop", "32", "--width",
            "2", "--out", work / "run", "--name", "dn", "--no-progressbar"]
    rc, _, err = run(args, capsys)
    assert rc == 0, err
    before = snapshot(work / "run")
    assert "dn.safetensors" in before
    rc, _, err = run(args, capsys)
    assert rc == 2 and "--resume" in one_error_line(err)
    assert snapshot(work / "run") == before


# --------------------------------------------------------------------------- fit-denoiser outputs


@pytest.mark.parametrize("existing", [".safetensors", ".json"])
@pytest.mark.parametrize("given", ["m.safetensors", "m.json", "m"])
def test_fit_denoiser_refuses_existing_model(given, existing, work, capsys, monkeypatch):
    denoise = importlib.import_module("hyperspy_partialscan.denoising")  # the package exports a function `denoise`
    monkeypatch.setattr(denoise, "fit_denoiser", lambda *a, **k: pytest.fail("fitted despite an existing model"))
    (work / f"m{existing}").write_bytes(b"a model the user keeps")
    before = snapshot(work)
    rc, _, err = run(["fit-denoiser", work / "full.hspy", work / given, "--no-progressbar"], capsys)
    assert rc == 2 and "--overwrite" in one_error_line(err)
    assert snapshot(work) == before


# --------------------------------------------------------------------------- messages


def test_rgb_input_notice(work, capsys):
    import hyperspy.api as hs

    rgb = hs.signals.Signal1D(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    rgb.change_dtype("rgb8")
    rgb.save(work / "colour.hspy")
    before = digest(work / "colour.hspy")
    rc, _, err = run(["simulate", work / "colour.hspy", work / "o.hspy", "--seed", "0", "--no-progressbar"], capsys)
    assert rc == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "RGB" in notes[0] and "grey" in notes[0]
    assert digest(work / "colour.hspy") == before


def test_skipped_signal_reported_without_verbose(work, capsys, monkeypatch):
    import hyperspy.api as hs

    image, spectrum = make_signal(size=32), hs.signals.Signal1D(np.arange(8.0))
    spectrum.metadata.General.title = "EDS"
    monkeypatch.setattr(hs, "load", lambda *a, **k: [spectrum, image])
    rc, _, err = run(["simulate", work / "full.hspy", work / "o.hspy", "--seed", "0", "--no-progressbar"], capsys)
    assert rc == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "skipping 1" in notes[0] and "[0] 'EDS'" in notes[0]


def test_fit_denoiser_several_images_names_them(work, capsys, monkeypatch):
    import hyperspy.api as hs

    a, b = make_signal(size=32), make_signal(size=32, seed=1)
    a.metadata.General.title, b.metadata.General.title = "HAADF", "BF"
    monkeypatch.setattr(hs, "load", lambda *args, **k: [a, b])
    rc, _, err = run(["fit-denoiser", work / "full.hspy", work / "m.safetensors", "--no-progressbar"], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "'HAADF'" in line and "'BF'" in line and "[1]" in line


def test_denoise_partial_scan_suggests_the_cli(work, capsys):
    rc, _, err = run(command("denoise", work / "partial.hspy", work / "o.hspy"), capsys)
    assert rc == 2
    assert "hyperspy-partialscan complete" in one_error_line(err)
    assert not (work / "o.hspy").exists()


def test_hyperspy_log_once_on_stderr(work, capsys):
    """HyperSpy's warnings come once, on stderr, plain: not also coloured on stdout."""
    import logging

    def handler(a):
        logging.getLogger("hyperspy.io").warning("a warning\nover two lines")

    cli._HANDLERS["test-log"] = handler
    try:
        class A:
            command, verbose = "test-log", False

        with cli._logging(False):
            handler(A)
        out, err = capsys.readouterr()
    finally:
        del cli._HANDLERS["test-log"]
    assert out == ""
    assert err.count("a warning") == 1 and "over two lines" in err and len(err.strip().splitlines()) == 1
    assert "\x1b[" not in err


def test_unreadable_input_subprocess_one_line(work):
    (work / "bad.hspy").write_bytes(b"garbage")
    res = subprocess.run([sys.executable, "-m", "hyperspy_partialscan.cli", "complete", str(work / "bad.hspy"),
                          str(work / "o.hspy"), "--method", "linear"], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: cannot read")
    assert res.stdout == ""
