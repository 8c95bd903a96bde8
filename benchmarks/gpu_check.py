"""GPU check: the package on CUDA / Apple MPS against the CPU path, and GPU throughput and memory.

For each accelerator found (or each ``--device``) and each ``--precision``:

* **completion** (``complete_partial_scan(method="generator")``) of two 1/20
  spiral partial scans (a nanoparticle field and an atomic lattice), compared
  with the CPU's float32 result; the same with ``uncertainty=True`` when the
  installed package has that parameter (otherwise reported as skipped);
* **denoising** (``denoise``) of two Poisson-noisy frames, blind and with the
  dose known (HyperSpy's Poisson variance model), compared with the CPU;
* **training**: a few Adam steps of a freshly seeded ``PartialScanGenerator``
  under ``torch.autocast`` (float16 with a gradient scaler), whose losses
  (step by step, relatively) and first gradient (relative to its largest
  component) are compared with the same steps on the CPU in float32;
* **throughput** at ``--sizes`` for ``--batch-sizes``: frames per second of the
  public ``complete_partial_scan`` (end to end: CPU feature preparation, 512 px
  tiles, transfers) and of the bare network forward on whole frames, with the
  peak GPU memory of each (CUDA; MPS has no peak counter).

Mismatch measure: the largest absolute difference between the device's and the
CPU's output, divided by the intensity range of the CPU output. Default
tolerances: 1e-3 for float32 (a twentieth of the 2 % RMSE differences that
separate the completion methods, far above float32 reordering noise ~1e-6 but
room for TF32 convolutions, cuDNN's default on Ampere and later GPUs: rerun
with ``--no-tf32`` to tell the two apart) and 2e-2 for bfloat16/float16
(autocast on the CPU measures 5e-3 to 7e-3 for bfloat16 and 9e-4 for float16;
bfloat16 keeps 8 mantissa bits, 4e-3 relative per rounding; its first training
gradient differs by 4e-3). The training check uses the same tolerances.

Exit status: 0 every check passed, or no accelerator was found and no
``--device`` was given ("no GPU (CUDA/MPS) available: nothing to check"; exit 3
instead with ``--require-gpu``); 1 a mismatch or a failing check; 2 bad
arguments or an unavailable ``--device``.

``--device cpu`` compares the CPU with itself (reduced precisions through CPU
autocast): a self-test of this script, run by the test suite with ``--quick``.

    python benchmarks/gpu_check.py --output benchmarks/results/gpu/gpu_check.md
    python benchmarks/gpu_check.py --device cpu --quick --output /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a plain checkout too
    sys.path.insert(1, str(REPO))

NO_GPU_MESSAGE = "no GPU (CUDA/MPS) available: nothing to check"
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_NO_GPU = 0, 1, 2, 3
PRECISIONS = ("float32", "bfloat16", "float16")
DEFAULT_TOLERANCE = 1e-3
DEFAULT_TOLERANCE_REDUCED = 2e-2


# ----------------------------------------------------------------------------- comparison


def compare(reference, result, tolerance):
    """Largest absolute difference relative to the reference's intensity range.

    Parameters
    ----------
    reference, result : array_like
        The CPU float32 output and the output under test (same shape).
    tolerance : float
        Largest accepted ``max|result - reference| / range(reference)``.

    Returns
    -------
    dict
        ``max_abs``, ``range``, ``relative`` (inf on a shape mismatch or a
        non-finite value where the reference is finite) and ``ok``.
    """
    ref = np.asarray(reference, np.float64)
    res = np.asarray(result, np.float64)
    if ref.shape != res.shape:
        return {"max_abs": float("inf"), "range": float("nan"), "relative": float("inf"), "ok": False,
                "note": f"shape {res.shape} != reference {ref.shape}"}
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(res)):
        return {"max_abs": float("inf"), "range": float("nan"), "relative": float("inf"), "ok": False,
                "note": "non-finite values differ from the reference"}
    span = float(ref[finite].max() - ref[finite].min()) if finite.any() else 0.0
    span = span if span > 0 else 1.0
    max_abs = float(np.abs(res[finite] - ref[finite]).max()) if finite.any() else 0.0
    rel = max_abs / span
    return {"max_abs": max_abs, "range": span, "relative": rel, "ok": bool(rel <= tolerance)}


def compare_losses(reference, result, tolerance):
    """Step-by-step relative difference of two loss curves (same keys as :func:`compare`)."""
    ref = np.asarray(reference, np.float64)
    res = np.asarray(result, np.float64)
    if ref.shape != res.shape or not np.isfinite(res).all():
        return {"max_abs": float("inf"), "range": float("nan"), "relative": float("inf"), "ok": False,
                "note": "non-finite or missing losses"}
    rel = float(np.max(np.abs(res - ref) / np.maximum(np.abs(ref), 1e-12)))
    return {"max_abs": float(np.abs(res - ref).max()), "range": float(np.abs(ref).max()), "relative": rel,
            "ok": bool(rel <= tolerance)}


# ----------------------------------------------------------------------------- devices


def accelerators():
    """The accelerators torch can use here: "cuda" and/or "mps"."""
    import torch

    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def synchronize(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def reset_peak(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """Peak GPU memory allocated by torch since :func:`reset_peak` (CUDA only; None elsewhere)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def free_memory(device):
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def is_oom(exc):
    return "out of memory" in str(exc).lower()


def one_line(exc):
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300]


# ----------------------------------------------------------------------------- test data


def completion_input(size, seed=0):
    """Two 1/20 spiral partial scans: a nanoparticle field and an atomic lattice."""
    import hyperspy.api as hs

    import hyperspy_partialscan as hps
    from hyperspy_partialscan.specimens import atomic_lattice, nanoparticle_field

    frames = np.stack([nanoparticle_field((size, size), seed=seed), atomic_lattice((size, size), seed=seed + 1)])
    return hps.to_partial_scan(hs.signals.Signal2D(frames), "spiral", coverage=1 / 20, seed=seed,
                               show_progressbar=False)


def denoising_inputs(size, seed=0, dose=20.0):
    """Poisson-noisy frames (dose electrons per pixel at full scale): blind, and with the dose recorded."""
    import hyperspy.api as hs

    from hyperspy_partialscan.specimens import atomic_lattice, nanoparticle_field

    rng = np.random.default_rng(seed)
    clean = np.stack([nanoparticle_field((size, size), seed=seed), atomic_lattice((size, size), seed=seed + 1)])
    clean = (clean - clean.min()) / np.ptp(clean)
    blind = hs.signals.Signal2D((rng.poisson(clean * dose) / dose).astype(np.float32))
    known = blind.deepcopy()
    known.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1 / dose)
    known.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset", 0.0)
    return {"blind": blind, "dose known": known}


@functools.lru_cache(maxsize=4)
def _partial_frame(size, seed=0):
    """One 1/20 spiral partial scan of ``size``x``size`` (a 512 px field tiled: a 2048 px field takes minutes)."""
    import hyperspy.api as hs

    import hyperspy_partialscan as hps
    from hyperspy_partialscan.specimens import nanoparticle_field

    base = nanoparticle_field((min(size, 512),) * 2, seed=seed)
    reps = -(-size // base.shape[0])
    frame = np.tile(base, (reps, reps))[:size, :size]
    return hps.to_partial_scan(hs.signals.Signal2D(frame), "spiral", coverage=1 / 20, seed=seed,
                               show_progressbar=False).data


def throughput_frames(size, batch):
    """A stack of ``batch`` identical partial scans (NaN = unsampled)."""
    import hyperspy.api as hs

    frame = _partial_frame(size)
    return hs.signals.Signal2D(np.broadcast_to(frame, (batch,) + frame.shape).copy())


# ----------------------------------------------------------------------------- checks


def _precision_arg(precision):
    return None if precision == "float32" else precision


def _arrays(result):
    """The arrays of a completion/denoising result: a signal, or a tuple/list/dict of signals or arrays."""
    if isinstance(result, dict):
        return [a for k in sorted(result) for a in _arrays(result[k])]
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in _arrays(r)]
    data = getattr(result, "data", result)
    return [np.asarray(data)]


def has_uncertainty():
    import hyperspy_partialscan as hps

    return ("uncertainty" in inspect.signature(hps.complete_partial_scan).parameters
            and bool(hps.list_models("uncertainty")))


class Checker:
    """Runs the checks on one device and collects rows for the report."""

    def __init__(self, args):
        self.args = args
        self.rows = []
        self.throughput = []
        self._reference = {}

    def tolerance(self, precision):
        return self.args.tolerance if precision == "float32" else self.args.tolerance_reduced

    def add(self, check, device, precision, outcome=None, status=None, note=""):
        row = {"check": check, "device": device, "precision": precision, "relative": None,
               "tolerance": self.tolerance(precision), "status": status, "note": note}
        if outcome is not None:
            row["relative"] = outcome["relative"]
            row["status"] = "ok" if outcome["ok"] else "MISMATCH"
            row["note"] = outcome.get("note", note)
        self.rows.append(row)
        rel = "" if row["relative"] is None else f" {row['relative']:.2e} (tol {row['tolerance']:.0e})"
        print(f"  {check:<34} {device:<6} {precision:<8} {row['status']}{rel} {row['note']}".rstrip(), flush=True)

    def reference(self, key, compute):
        """The CPU float32 result of ``key`` (computed once per run)."""
        if key not in self._reference:
            self._reference[key] = compute()
        return self._reference[key]

    def guarded(self, check, device, precision, func):
        """Run ``func() -> outcome``; an unsupported reduced precision on MPS is a skip, anything else a failure."""
        try:
            outcome = func()
        except Exception as exc:  # noqa: BLE001  (every failure is reported, one line each)
            if device == "mps" and precision != "float32" and ("not supported" in str(exc) or "bfloat16" in str(exc)):
                self.add(check, device, precision, status="skipped", note=f"unsupported here: {one_line(exc)}")
            else:
                self.add(check, device, precision, status="error", note=one_line(exc))
            return
        self.add(check, device, precision, outcome)

    # -- completion and denoising through the public API

    def completion(self, device, precision):
        import hyperspy_partialscan as hps

        p = completion_input(self.args.check_size)
        common = dict(method="generator", navigation_chunks=2, show_progressbar=False)

        def run(dev, prec, **extra):
            return _arrays(hps.complete_partial_scan(p, device=dev, precision=prec, **common, **extra))

        tol = self.tolerance(precision)

        def check():
            ref = self.reference("completion", lambda: run("cpu", None))
            got = run(device, _precision_arg(precision))
            return worst([compare(r, g, tol) for r, g in zip(ref, got, strict=True)])

        self.guarded("completion", device, precision, check)
        if not has_uncertainty():
            self.add("completion, uncertainty", device, precision, status="skipped (not available)")
            return

        def check_u():
            ref_u = self.reference("completion_uncertainty", lambda: run("cpu", None, uncertainty=True))
            got = run(device, _precision_arg(precision), uncertainty=True)
            if len(got) != len(ref_u):
                return {"relative": float("inf"), "ok": False, "note": f"{len(got)} outputs, CPU {len(ref_u)}"}
            return worst([compare(r, g, tol) for r, g in zip(ref_u, got, strict=True)])

        self.guarded("completion, uncertainty", device, precision, check_u)

    def denoising(self, device, precision):
        import hyperspy_partialscan as hps

        tol = self.tolerance(precision)
        for name, signal in denoising_inputs(self.args.check_size).items():
            def run(dev, prec, signal=signal):
                return hps.denoise(signal, "generator", device=dev, precision=prec, navigation_chunks=2,
                                   show_progressbar=False).data

            def check(run=run, name=name):
                ref = self.reference(f"denoising {name}", lambda: run("cpu", None))
                return compare(ref, run(device, _precision_arg(precision)), tol)

            self.guarded(f"denoising, {name}", device, precision, check)

    # -- training under autocast

    def training(self, device, precision):
        tol = self.tolerance(precision)

        def check():
            ref = self.reference("training", lambda: train_steps("cpu", "float32", self.args))
            got = train_steps(device, precision, self.args)
            grad = compare(ref["gradient"], got["gradient"], tol)
            grad["relative"] = float(np.abs(got["gradient"] - ref["gradient"]).max() / np.abs(ref["gradient"]).max())
            grad["ok"] = bool(grad["relative"] <= tol)
            return worst([compare_losses(ref["losses"], got["losses"], tol), grad])

        self.guarded(f"training, {self.args.train_steps} Adam steps", device, precision, check)

    # -- throughput

    def measure_throughput(self, device, precision):
        for size in self.args.sizes:
            for batch in self.args.batch_sizes:
                row = {"device": device, "precision": precision, "size": size, "batch": batch}
                row.update(end_to_end(device, precision, size, batch, self.args))
                row.update(network_forward(device, precision, size, batch, self.args))
                self.throughput.append(row)
                print(f"  throughput {device} {precision:<8} {size}^2 batch {batch:>2}: "
                      f"end to end {fmt(row['e2e_fps'])} fps, network {fmt(row['net_fps'])} fps, "
                      f"peak {fmt(row['e2e_peak_mib'])} / {fmt(row['net_peak_mib'])} MiB", flush=True)


def worst(outcomes):
    """The outcome with the largest relative difference (all must pass)."""
    out = dict(max(outcomes, key=lambda o: o["relative"]))
    out["ok"] = all(o["ok"] for o in outcomes)
    return out


def fmt(value, digits=3):
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}g}"


def train_steps(device, precision, args):
    """``args.train_steps`` Adam steps of a freshly seeded generator on a fixed random batch; the losses."""
    import torch

    from hyperspy_partialscan.models.networks import PartialScanGenerator

    torch.manual_seed(0)
    net = PartialScanGenerator().to(device)
    g = torch.Generator().manual_seed(1)
    n, s = 2, args.train_size
    x = torch.rand((n, 4, s, s), generator=g).to(device)
    y = torch.rand((n, 1, s, s), generator=g).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device) if precision == "float16" and device != "cpu" else None
    def ctx():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

    losses, gradient = [], None
    t0 = time.perf_counter()
    for step in range(args.train_steps):
        opt.zero_grad(set_to_none=True)
        with ctx():
            out = net(x)
        loss = torch.mean((out.float() - y) ** 2)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        if step == 0:  # the first gradient, all parameters flattened (the backward pass under test)
            gradient = torch.cat([p.grad.detach().float().flatten() for p in net.parameters() if p.grad is not None])
            gradient = gradient.cpu().numpy()
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        losses.append(float(loss.detach()))
    synchronize(device)
    return {"losses": losses, "gradient": gradient, "seconds": time.perf_counter() - t0}


def _timed(func, device, repeats, warm_up=None):
    """Best wall time of ``repeats`` calls after one warm-up call (``warm_up``, default ``func``); peak GPU memory."""
    (warm_up or func)()
    synchronize(device)
    best = float("inf")
    reset_peak(device)
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, peak_memory_mib(device)


def end_to_end(device, precision, size, batch, args):
    """Frames per second of ``complete_partial_scan`` on ``batch`` frames in one batch."""
    import hyperspy_partialscan as hps

    if args.skip_end_to_end:
        return {"e2e_fps": "skipped", "e2e_peak_mib": None}
    def run(signal, batch_size):
        return hps.complete_partial_scan(signal, method="generator", device=device,
                                         precision=_precision_arg(precision), navigation_chunks=batch_size,
                                         network_batch_size=batch_size,
                                         show_progressbar=False)

    p, one = throughput_frames(size, batch), throughput_frames(size, 1)
    try:  # warm up on one frame, then time once: at 2048 px the CPU's feature preparation takes seconds a frame
        seconds, peak = _timed(lambda: run(p, batch), device, 1, warm_up=lambda: run(one, 1))
    except Exception as exc:  # noqa: BLE001
        free_memory(device)
        return {"e2e_fps": "out of memory" if is_oom(exc) else f"error: {one_line(exc)}", "e2e_peak_mib": None}
    return {"e2e_fps": batch / seconds, "e2e_peak_mib": peak}


def network_forward(device, precision, size, batch, args):
    """Frames per second of the completion network's forward pass on whole frames (no tiling)."""
    import torch

    import hyperspy_partialscan as hps

    net = hps.load_model(task="completion").on(torch.device(device))
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    try:
        x = torch.rand((batch, 4, size, size), device=device).contiguous(memory_format=torch.channels_last)

        def forward():
            with torch.inference_mode():
                if dtype is None:
                    net(x)
                else:
                    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
                        net(x)

        seconds, peak = _timed(forward, device, args.repeats)
    except Exception as exc:  # noqa: BLE001
        return {"net_fps": "out of memory" if is_oom(exc) else f"error: {one_line(exc)}", "net_peak_mib": None}
    finally:
        x = None
        free_memory(device)
    return {"net_fps": batch / seconds, "net_peak_mib": peak}


# ----------------------------------------------------------------------------- report


def environment(devices):
    import torch

    import hyperspy_partialscan as hps

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "hyperspy_partialscan": hps.__version__,
        "cpu_threads": torch.get_num_threads(),
        "devices": {},
    }
    for d in devices:
        if d.startswith("cuda"):
            env["cuda"] = torch.version.cuda
            env["cudnn"] = torch.backends.cudnn.version()
            env["tf32_convolutions"] = bool(torch.backends.cudnn.allow_tf32)
            env["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
            props = torch.cuda.get_device_properties(d)
            env["devices"][d] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        elif d == "mps":
            env["devices"][d] = f"Apple MPS ({platform.machine()})"
        else:
            env["devices"][d] = f"CPU ({platform.processor() or platform.machine()})"
    return env


def markdown(report):
    env = report["environment"]
    lines = ["# GPU check", "", f"Result: **{report['result']}**", ""]
    lines += [f"* {k}: {v}" for k, v in env.items() if k != "devices"]
    lines += [f"* device {k}: {v}" for k, v in env["devices"].items()]
    lines += ["", "## Agreement with the CPU (float32)", "",
              "max |device - CPU| / range of the CPU output (training: the larger of the relative loss difference "
              "and max |gradient difference| / max |CPU gradient| at the first step)", "",
              "| check | device | precision | difference | tolerance | result | note |",
              "|---|---|---|---|---|---|---|"]
    for r in report["checks"]:
        rel = "" if r["relative"] is None else f"{r['relative']:.2e}"
        lines.append(f"| {r['check']} | {r['device']} | {r['precision']} | {rel} | {r['tolerance']:.0e} | "
                     f"{r['status']} | {r['note']} |")
    lines += ["", "## Throughput", "",
              "End to end: `complete_partial_scan(method=\"generator\")` on one batch of frames (CPU feature "
              "preparation, 512 px tiles, transfers). Network: the completion network's forward pass on whole "
              "frames, no tiling. Peak memory: torch's peak GPU allocation (CUDA only). End to end: one timed run "
              f"after a one-frame warm-up; network: best of {report['repeats']} after a warm-up.", "",
              "| device | precision | frame | batch | end to end (frames/s) | peak MiB | network (frames/s) "
              "| peak MiB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["throughput"]:
        lines.append(f"| {r['device']} | {r['precision']} | {r['size']}² | {r['batch']} | {fmt(r['e2e_fps'])} | "
                     f"{fmt(r['e2e_peak_mib'], 4)} | {fmt(r['net_fps'])} | {fmt(r['net_peak_mib'], 4)} |")
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file beside it (never a half-written report)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- command line


def _list(kind, choices=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{', '.join(bad)} not in {', '.join(choices)}")
            return items
        try:
            values = [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of {kind.__name__}: {text!r}") from None
        if kind is not str and any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"values must be positive: {text!r}")
        return values

    return parse


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Exit status: 0 all passed (or no GPU and no --device); 1 mismatch or "
                                        "failing check; 2 bad arguments or device; 3 no GPU with --require-gpu.")
    ap.add_argument("--device", type=_list(str), default=None,
                    help="devices to check, comma-separated (default: every accelerator found: cuda, mps); "
                         "'cpu' compares the CPU with itself (self-test)")
    ap.add_argument("--sizes", type=_list(int), default=None, help="throughput frame sizes (default 512,2048)")
    ap.add_argument("--batch-sizes", type=_list(int), default=None,
                    help="throughput batch sizes (default 1,2,4,8,16,32)")
    ap.add_argument("--precision", type=_list(str, PRECISIONS), default=list(PRECISIONS),
                    help="precisions, comma-separated (default float32,bfloat16,float16)")
    ap.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                    help=f"largest max|device - CPU| / range for float32 (default {DEFAULT_TOLERANCE:g})")
    ap.add_argument("--tolerance-reduced", type=float, default=DEFAULT_TOLERANCE_REDUCED,
                    help=f"the same for bfloat16/float16 (default {DEFAULT_TOLERANCE_REDUCED:g})")
    ap.add_argument("--output", type=Path, default=None,
                    help="report file: JSON if it ends in .json, markdown otherwise (written atomically)")
    ap.add_argument("--quick", action="store_true",
                    help="small frames and few repeats (defaults: sizes 128, batch sizes 1,2, check frames 64 px)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per throughput point (default 3; quick 1)")
    ap.add_argument("--train-steps", type=int, default=3, help="Adam steps of the training check (default 3)")
    ap.add_argument("--skip-end-to-end", action="store_true", help="measure only the network's throughput")
    ap.add_argument("--no-tf32", action="store_true",
                    help="disable TF32 in CUDA convolutions and matrix products (strict float32)")
    ap.add_argument("--require-gpu", action="store_true", help="exit 3 instead of 0 when no accelerator is found")
    args = ap.parse_args(argv)
    args.sizes = args.sizes or ([128] if args.quick else [512, 2048])
    args.batch_sizes = args.batch_sizes or ([1, 2] if args.quick else [1, 2, 4, 8, 16, 32])
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.check_size = 64 if args.quick else 256
    args.train_size = 32 if args.quick else 128
    if args.repeats < 1 or args.train_steps < 1:
        ap.error("--repeats and --train-steps must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from hyperspy_partialscan.device import select_device

    if args.device is None:
        devices = accelerators()
        if not devices:
            print(NO_GPU_MESSAGE)
            return EXIT_NO_GPU if args.require_gpu else EXIT_OK
    else:
        devices = []
        for d in args.device:
            try:
                devices.append(str(select_device(d)))
            except ValueError as exc:
                print(f"gpu_check: {exc}", file=sys.stderr)
                return EXIT_USAGE
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    checker = Checker(args)
    t0 = time.perf_counter()
    for device in devices:
        print(f"{device}: agreement with the CPU", flush=True)
        for precision in args.precision:
            checker.completion(device, precision)
            checker.denoising(device, precision)
            checker.training(device, precision)
        print(f"{device}: throughput", flush=True)
        for precision in args.precision:
            checker.measure_throughput(device, precision)
    failed = [r for r in checker.rows if r["status"] in ("MISMATCH", "error")]
    result = "passed" if not failed else f"FAILED ({len(failed)} of {len(checker.rows)} checks)"
    report = {"result": result, "environment": environment(devices), "repeats": args.repeats,
              "tolerance": {"float32": args.tolerance, "reduced": args.tolerance_reduced},
              "seconds": round(time.perf_counter() - t0, 1), "checks": checker.rows, "throughput": checker.throughput}
    if args.output is not None:
        text = json.dumps(report, indent=1) + "\n" if args.output.suffix == ".json" else markdown(report)
        write_atomic(args.output, text)
        print(f"report: {args.output}")
    print(f"gpu_check: {result}")
    for r in failed:
        what = r["note"] if r["relative"] is None else f"{r['relative']:.2e} > {r['tolerance']:.0e} {r['note']}"
        print(f"  {r['status']}: {r['check']} on {r['device']} ({r['precision']}): {what}".rstrip())
    return EXIT_MISMATCH if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
