"""Benchmark: completion speed per method, and batched lazy throughput of the generator.

1. Time per 512x512 frame (coverage 1/20, spiral) for every method of
   ``complete_partial_scan`` (nearest, linear, cubic, biharmonic, generator):
   one-frame signals through the engine, median over ``--frames`` frames after
   one untimed warm-up call (model loading, first-call overheads).
2. Generator throughput (frames/s) in a batched *lazy* run: a lazy stack of
   ``--lazy-frames`` 512x512 partial scans, ``complete_partial_scan(...,
   navigation_chunks=8, lazy_output=True)`` then ``compute()`` on dask's threaded
   scheduler with ``torch.set_num_threads(--threads)``; the same at 2048x2048
   (``--large-frames`` frames, overlapping 512x512 tiles). Each run twice: a
   new path per frame (a simulation with ``vary_per_frame=True``) and one path
   for every frame (an acquisition: the triangulation behind the linear-fill
   input is made once).
3. The same generator figures on CUDA, only if a CUDA device is present.

    python benchmarks/bench_completion_speed.py                    # shipped default model, 2 threads
    python benchmarks/bench_completion_speed.py --model runs/completion/completion_default.safetensors
"""

from __future__ import annotations

import time

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

METHODS = ("nearest", "linear", "cubic", "biharmonic", "generator")


def parse_args(argv=None):
    p = C.base_parser(__doc__.split("\n\n")[0], model_task="completion", threads=2)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--frames", type=int, default=5, help="frames timed per method (median)")
    p.add_argument("--size", type=int, default=512, help="frame side of the per-method timing and the lazy run")
    p.add_argument("--coverage", type=float, default=1 / 20)
    p.add_argument("--path", default="spiral")
    p.add_argument("--lazy-frames", type=int, default=32, help="frames of the lazy 512² run (0: skip)")
    p.add_argument("--large-size", type=int, default=2048, help="frame side of the tiled lazy run")
    p.add_argument("--large-frames", type=int, default=4, help="frames of the tiled lazy run (0: skip)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per dask block in the lazy runs")
    p.add_argument("--workers", type=int, default=None,
                   help="dask threaded-scheduler workers (default: dask's default, the number of cores)")
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA figures even if a GPU is present")
    return p.parse_args(argv)


def _frames(n, size, seed):
    """Ground-truth frames: alternating built-in specimens (lattice only beyond 1024², the other is slow there)."""
    kinds = ("lattice", "particles") if size <= 1024 else ("lattice",)
    return [C.specimen(kinds[i % len(kinds)], seed + i, (size, size)) for i in range(n)]


def per_frame_times(args, methods, model_ref, partials, device=None):
    """Median seconds per frame of each method on one-frame signals (non-lazy engine)."""
    from hyperspy_partialscan import complete_partial_scan, inpainting

    rows = []
    for method in methods:
        kw = {"model": model_ref, "device": device} if method == "generator" else {}
        def run(f, method=method, kw=kw):
            # time every frame as the first along its path (no cached triangulation)
            inpainting.clear_triangulation_cache()
            return complete_partial_scan(C.stack_signal(f[None]), method, show_progressbar=False, **kw)

        run(partials[0])  # warm-up (model load, imports)
        times = [C.timed(run, f)[1] for f in partials]
        rows.append({"method": method, "device": device or "cpu", "frame": f"{args.size}x{args.size}",
                     "median_s": float(np.median(times)), "min_s": float(np.min(times)), "frames": len(times)})
        print(f"  {method:>10} [{device or 'cpu'}]: {C.human_seconds(rows[-1]['median_s'])} per frame", flush=True)
    return rows


def lazy_throughput(args, model_ref, partials, device=None, paths="one per frame"):
    """Frames/s of a batched lazy generator run over ``partials`` (n, H, W)."""
    import dask

    from hyperspy_partialscan import complete_partial_scan, inpainting

    inpainting.clear_triangulation_cache()
    s = C.stack_signal(partials, lazy=True, chunk=args.batch_size)
    # warm-up on one frame (model load, first-call overheads) so the run measures steady-state throughput
    complete_partial_scan(C.stack_signal(partials[:1]), "generator", model=model_ref, device=device,
                          show_progressbar=False)
    out = complete_partial_scan(s, "generator", model=model_ref, device=device, navigation_chunks=args.batch_size,
                                lazy_output=True, show_progressbar=False)
    cfg = {"scheduler": "threads"}
    if args.workers:
        cfg["num_workers"] = args.workers
    with dask.config.set(cfg):
        t0 = time.perf_counter()
        data = out.data.compute()
        dt = time.perf_counter() - t0
    if not np.isfinite(data).all():
        raise RuntimeError("the lazy generator run left non-finite pixels")
    n = len(partials)
    h, w = partials.shape[-2:]
    return {"run": f"lazy {h}x{w}", "paths": paths, "device": device or "cpu", "frames": n,
            "batch_size": args.batch_size,
            "workers": args.workers or "default", "seconds": dt, "frames_per_s": n / dt,
            "megapixels_per_s": n * h * w / dt / 1e6}


def main(argv=None):
    args = C.setup(parse_args(argv))
    import torch

    model = C.resolve_model(args.model, "completion")
    model_ref = str(model.path)
    cuda = torch.cuda.is_available() and not args.no_gpu
    t_start = time.perf_counter()
    devices = [None] + (["cuda"] if cuda else [])

    C.banner(f"per-frame time, {args.size}² {args.path} at coverage {args.coverage:.4g}")
    truth = _frames(args.frames, args.size, args.seed)
    partials, cov = C.simulate_partials(truth, args.path, args.coverage, args.seed)
    method_rows = []
    for dev in devices:  # classical methods run on the CPU only
        methods = args.methods if dev is None else [m for m in args.methods if m == "generator"]
        method_rows += per_frame_times(args, methods, model_ref, partials, dev)

    lazy_rows = []
    runs = [(args.size, args.lazy_frames), (args.large_size, args.large_frames)]
    for size, n in runs:
        if n <= 0:
            continue
        C.banner(f"lazy generator run: {n} frames of {size}², batch {args.batch_size}")
        reps = max(1, min(n, 4))  # a few distinct specimens, repeated (the content does not change the cost)
        truth = np.stack(_frames(reps, size, args.seed + 100))[np.arange(n) % reps]
        # a simulation with vary_per_frame=True (a new path, so a new triangulation, per frame) and an
        # acquisition (every frame scanned along the same path: the linear-fill input reuses one triangulation)
        distinct, _ = C.simulate_partials(truth, args.path, args.coverage, args.seed + 100)
        shared, _ = C.simulate_partials(truth, args.path, args.coverage, args.seed + 100, keys=[0] * n)
        for paths, stack in (("one per frame", distinct), ("one for all frames", shared)):
            for dev in devices:
                row = lazy_throughput(args, model_ref, stack, dev, paths)
                lazy_rows.append(row)
                print(f"  [{row['device']}] paths {paths}: {row['frames_per_s']:.3g} frames/s "
                      f"({C.human_seconds(row['seconds'])} for {n} frames)", flush=True)
    total = time.perf_counter() - t_start

    C.write_csv(method_rows + lazy_rows, args.out / "bench_completion_speed.csv")
    t1 = C.markdown_table([dict(r, time=C.human_seconds(r["median_s"]), fps=1 / r["median_s"]) for r in method_rows],
                          ["method", "device", "frame", "time", "fps", "frames"],
                          headers=["method", "device", "frame", "median time/frame", "frames/s", "frames timed"])
    t2 = C.markdown_table([dict(r, time=C.human_seconds(r["seconds"])) for r in lazy_rows],
                          ["run", "paths", "device", "frames", "batch_size", "workers", "time", "frames_per_s",
                           "megapixels_per_s"],
                          headers=["run", "scan paths", "device", "frames", "batch", "dask workers", "time",
                                   "frames/s", "Mpx/s"])
    info = C.model_info(model)
    gpu = ("CUDA device: " + torch.cuda.get_device_name(0)) if torch.cuda.is_available() else \
        "No CUDA device: GPU figures not measured."
    env = C.environment(args)
    C.write_report(args.out / "bench_completion_speed.md", "Completion speed", [
        ("Setup", f"Model `{info['name']}` (sha256 {info['sha256']}…, {info['iterations']} iterations); "
                  f"torch threads {torch.get_num_threads()}; {args.path} paths at coverage {args.coverage:.4g} "
                  f"(measured {np.mean(cov):.4f}). {gpu}"),
        ("Time per frame", t1 + "\nEach frame is timed as the first along its path (no cached triangulation); "
                               "frames scanned along an already seen path skip the Delaunay triangulation of "
                               "linear and cubic."),
        ("Generator throughput, batched lazy runs", t2 + "\nFrames larger than 512² go through overlapping "
                                                        "512² tiles (64 px overlap)."),
    ], env)
    C.banner(f"completion speed (torch threads {torch.get_num_threads()}; total {C.human_seconds(total)})")
    print(t1)
    print(t2)
    print(gpu)
    print(f"written: {args.out / 'bench_completion_speed.csv'}, {args.out / 'bench_completion_speed.md'}")
    return method_rows, lazy_rows


if __name__ == "__main__":
    main()
