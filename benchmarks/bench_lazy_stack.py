"""Benchmark: bounded memory when completing a large on-disk stack lazily.

1. Writes a ``--frames`` x 512 x 512 float32 stack of partial scans to disk as
   ``.zspy`` without ever holding it in memory: the ground-truth frames are made
   lazily by dask from the built-in specimens (a bank of ``--bank`` specimens,
   rotated, flipped and shifted per frame), partially scanned lazily with
   ``to_partial_scan`` (one spiral at coverage 1/20, as a fixed scan generator
   would), and saved with ``s.save("input.zspy")`` (chunk by chunk).
2. In a fresh subprocess: ``hs.load("input.zspy", lazy=True)``,
   ``complete_partial_scan(method=..., lazy_output=True)`` and
   ``.save("completed.zspy")``, measuring the process's peak resident memory
   (``getrusage`` high-water mark and a psutil sampling thread) and the
   throughput.

Each phase runs in its own fresh Python process; the big files are deleted at
the end (``--keep`` to keep them). Target: peak RSS of phase 2 < 2 GiB.

    python benchmarks/bench_lazy_stack.py                         # 1000 frames, generator
    python benchmarks/bench_lazy_stack.py --method linear --frames 200
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

SIZE = 512
GiB = 1024**3


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0], model_task="completion", threads=2)
    p.add_argument("--frames", type=int, default=1000, help="frames in the on-disk stack")
    p.add_argument("--method", default="generator", choices=["generator", "linear", "nearest", "cubic"],
                   help="completion method")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="folder for the big .zspy files (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the .zspy files")
    p.add_argument("--coverage", type=float, default=1 / 20)
    p.add_argument("--bank", type=int, default=8, help="distinct built-in specimens the frames are made from")
    p.add_argument("--chunk", type=int, default=16, help="frames per chunk of the input file")
    p.add_argument("--batch-size", type=int, default=None,
                   help="frames per completion block (default: the package's default)")
    p.add_argument("--workers", type=int, default=None,
                   help="dask threaded-scheduler workers (default: dask's default, the number of cores)")
    p.add_argument("--limit-gib", type=float, default=2.0, help="peak-RSS target of the completion phase")
    p.add_argument("--child", choices=["write", "complete"], default=None, help=argparse_hidden())
    p.add_argument("--child-input", type=Path, default=None, help=argparse_hidden())
    p.add_argument("--child-output", type=Path, default=None, help=argparse_hidden())
    return p.parse_args(argv)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


# --------------------------------------------------------------------------- memory probe


class PeakRSS:
    """Peak resident memory of this process: a sampling thread plus the kernel's high-water mark."""

    def __init__(self, interval=0.05):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @staticmethod
    def high_water():
        """``ru_maxrss`` of this process in bytes (Linux reports KiB, macOS bytes)."""
        import resource

        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return v if sys.platform == "darwin" else v * 1024


# --------------------------------------------------------------------------- phase 1: write the stack


@cache
def _bank_frame(k):
    """Specimen ``k`` of the bank (alternating lattice / nanoparticles), made once per process."""
    return C.specimen("lattice" if k % 2 == 0 else "particles", 1000 + k, (SIZE, SIZE))


class _TruthBlock:
    """Ground-truth frames of one dask block, from the specimen bank (picklable)."""

    def __init__(self, chunk, bank):
        self.chunk, self.bank = chunk, bank

    def __call__(self, block_id=None, block_info=None):
        start = block_info[None]["array-location"][0][0]
        stop = block_info[None]["array-location"][0][1]
        out = np.empty((stop - start, SIZE, SIZE), np.float32)
        for j, i in enumerate(range(start, stop)):
            f = np.rot90(_bank_frame(i % self.bank), (i // self.bank) % 4)
            if (i // (4 * self.bank)) % 2:
                f = f[:, ::-1]
            out[j] = np.roll(f, ((37 * i) % SIZE, (91 * i) % SIZE), axis=(0, 1))
        return out


def child_write(args):
    import dask.array as da
    import hyperspy.api as hs

    from hyperspy_partialscan import to_partial_scan

    n, c = args.frames, args.chunk
    chunks = (tuple([c] * (n // c) + ([n % c] if n % c else [])), (SIZE,), (SIZE,))
    truth = da.map_blocks(_TruthBlock(c, args.bank), dtype=np.float32, chunks=chunks,
                          meta=np.empty((0, 0, 0), np.float32), name="benchmark-truth")
    s = hs.signals.Signal2D(truth).as_lazy()
    s.metadata.General.title = f"{n} synthetic frames"
    with PeakRSS() as probe:
        t0 = time.perf_counter()
        partial = to_partial_scan(s, "spiral", args.coverage, seed=args.seed, navigation_chunks=c, lazy_output=True,
                                  show_progressbar=False)
        partial.save(args.child_input, overwrite=True, show_progressbar=False)
        dt = time.perf_counter() - t0
    return {"phase": "write", "frames": n, "seconds": dt, "peak_rss": max(probe.peak, probe.high_water()),
            "peak_rss_sampled": probe.peak, "ru_maxrss": probe.high_water(),
            "coverage_measured": partial.metadata.Signal.Partial_scan.coverage_path}


# --------------------------------------------------------------------------- phase 2: complete it


def child_complete(args):
    import dask
    import hyperspy.api as hs

    from hyperspy_partialscan import complete_partial_scan

    rss_imports = PeakRSS.high_water()
    kw = {"model": args.model} if args.method == "generator" else {}
    cfg = {"scheduler": "threads"}
    if args.workers:
        cfg["num_workers"] = args.workers
    with PeakRSS() as probe, dask.config.set(cfg):
        t0 = time.perf_counter()
        s = hs.load(args.child_input, lazy=True)
        out = complete_partial_scan(s, args.method, navigation_chunks=args.batch_size, lazy_output=True,
                                    show_progressbar=False, **kw)
        out.save(args.child_output, overwrite=True, show_progressbar=False)
        dt = time.perf_counter() - t0
    # spot check: first and last frames complete, right shape
    back = hs.load(args.child_output, lazy=True)
    shape = tuple(back.data.shape)
    finite = bool(np.isfinite(back.inav[0].data.compute()).all() and np.isfinite(back.inav[-1].data.compute()).all())
    return {"phase": f"complete ({args.method})", "frames": int(shape[0]), "seconds": dt,
            "peak_rss": max(probe.peak, probe.high_water()), "peak_rss_sampled": probe.peak,
            "ru_maxrss": probe.high_water(), "rss_after_imports": rss_imports, "output_shape": list(shape),
            "output_finite": finite, "chunks_in": [int(x) for x in s.data.chunksize],
            "chunks_out": [int(x) for x in out.data.chunksize],
            "model": (out.metadata.Signal.Partial_scan.Completion.as_dictionary().get("model")
                      if args.method == "generator" else None)}


def run_child(phase, args, inp, outp):
    """Run one phase in a fresh interpreter; return its result dictionary."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", phase, "--child-input", str(inp),
           "--child-output", str(outp), "--frames", str(args.frames), "--method", args.method,
           "--threads", str(args.threads), "--seed", str(args.seed), "--coverage", repr(args.coverage),
           "--bank", str(args.bank), "--chunk", str(args.chunk), "--out", str(args.out)]
    for opt, val in (("--model", args.model), ("--batch-size", args.batch_size), ("--workers", args.workers)):
        if val is not None:
            cmd += [opt, str(val)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"phase {phase!r} failed (exit {proc.returncode})")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    res = json.loads(lines[-1][len("RESULT "):])
    res["process_wall_s"] = wall
    return res


def _dir_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        C.setup(args)
        res = child_write(args) if args.child == "write" else child_complete(args)
        print("RESULT " + json.dumps(res, default=str), flush=True)
        return res
    args = C.setup(args)
    if args.method == "generator":
        model = C.resolve_model(args.model, "completion")  # fail early, and record which model
        args.model = str(model.path)
    created = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="partialscan_lazybench_")) if created else Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    inp, outp = work / "input.zspy", work / "completed.zspy"
    t_start = time.perf_counter()
    try:
        C.banner(f"phase 1: writing {args.frames} frames of {SIZE}² to {inp}")
        w = run_child("write", args, inp, outp)
        w["disk_bytes"] = _dir_size(inp)
        print(f"  {C.human_seconds(w['seconds'])}, peak RSS {w['peak_rss'] / GiB:.2f} GiB, "
              f"{w['disk_bytes'] / 1e6:.0f} MB on disk", flush=True)
        C.banner(f"phase 2: lazy completion ({args.method}) in a fresh process")
        c = run_child("complete", args, inp, outp)
        c["disk_bytes"] = _dir_size(outp)
        print(f"  {C.human_seconds(c['seconds'])}, {c['frames'] / c['seconds']:.3g} frames/s, "
              f"peak RSS {c['peak_rss'] / GiB:.2f} GiB", flush=True)
    finally:
        if not args.keep:
            for p in (inp, outp):
                shutil.rmtree(p, ignore_errors=True)
            if created:
                shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_start

    rows = []
    for r in (w, c):
        rows.append({
            "phase": r["phase"], "frames": r["frames"], "seconds": r["seconds"],
            "frames_per_s": r["frames"] / r["seconds"], "peak_rss_gib": r["peak_rss"] / GiB,
            "peak_rss_sampled_gib": r["peak_rss_sampled"] / GiB, "ru_maxrss_gib": r["ru_maxrss"] / GiB,
            "rss_after_imports_gib": r.get("rss_after_imports", float("nan")) / GiB,
            "disk_mb": r["disk_bytes"] / 1e6, "process_wall_s": r["process_wall_s"],
        })
    ok = rows[1]["peak_rss_gib"] < args.limit_gib and c["output_finite"] and c["frames"] == args.frames
    C.write_csv([dict(r, method=args.method, threads=args.threads, workers=args.workers or "default",
                      batch_size=args.batch_size or "default") for r in rows], args.out / "bench_lazy_stack.csv")
    table = C.markdown_table(
        [dict(r, time=C.human_seconds(r["seconds"])) for r in rows],
        ["phase", "frames", "time", "frames_per_s", "peak_rss_gib", "rss_after_imports_gib", "disk_mb"],
        headers=["phase", "frames", "time", "frames/s", "peak RSS (GiB)", "RSS after imports (GiB)", "on disk (MB)"])
    verdict = (f"Peak RSS of the completion phase: {rows[1]['peak_rss_gib']:.2f} GiB (target < {args.limit_gib:g} "
               f"GiB): **{'PASS' if ok else 'FAIL'}**; output {c['output_shape']}, all pixels of the first and "
               f"last frames finite: {c['output_finite']}; chunks in {c['chunks_in']}, completion blocks "
               f"{c['chunks_out']}; dask workers: {args.workers or 'default (' + str(os.cpu_count()) + ')'}; "
               f"torch threads {args.threads}. Total time {C.human_seconds(total)}.")
    env = C.environment(args)
    C.write_report(args.out / "bench_lazy_stack.md", "Lazy completion of an on-disk stack: memory and throughput", [
        ("Protocol", f"{args.frames} frames of {SIZE}² float32 ({args.frames * SIZE * SIZE * 4 / GiB:.2f} GiB "
                     f"uncompressed), spiral partial scans at coverage {args.coverage:.4g} written lazily to .zspy; "
                     f"then, in a fresh process, `hs.load(lazy=True)` → `complete_partial_scan(method="
                     f"'{args.method}', lazy_output=True)` → `.save('completed.zspy')`. Peak RSS is the larger "
                     f"of the kernel's high-water mark (`ru_maxrss`) and a 50 ms psutil sampler."),
        ("Results", table + "\n" + verdict),
    ], env)
    C.banner(f"lazy on-disk stack, method {args.method}")
    print(table)
    print(verdict)
    print(f"written: {args.out / 'bench_lazy_stack.csv'}, {args.out / 'bench_lazy_stack.md'}")
    return rows


if __name__ == "__main__":
    main()
