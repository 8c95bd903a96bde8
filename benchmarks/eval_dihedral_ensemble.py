"""Exploration: does a test-time dihedral ensemble of the generator bring it closer to issue 12's 0.62x linear?

For every val crop (512², min/max normalised) and path (spiral, jittered grid, random at 1/20,
noise-free), the generator completes the scan in 1, 2, 4 and 8 of the square's symmetries
(identity, transpose, flips, ...) and the completions, mapped back, are averaged. Reported: the mean
RMSE (% of range, against the blurred truth) over crops divided by linear interpolation's, per
ensemble size. An ensemble of k costs k generator passes.

    python benchmarks/eval_dihedral_ensemble.py [--threads 2] [--max-images N]
"""

from __future__ import annotations

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

PATHS = ("spiral", "jittered_grid", "random")
SIZES = (1, 2, 4, 8)

#: (transform, its inverse) for the eight symmetries of the square
SYMMETRIES = (
    (lambda a: a, lambda a: a),
    (lambda a: a.T, lambda a: a.T),
    (lambda a: a[::-1], lambda a: a[::-1]),
    (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    (lambda a: a.T[::-1], lambda a: a[::-1].T),
    (lambda a: a.T[:, ::-1], lambda a: a[:, ::-1].T),
    (lambda a: a[::-1, ::-1].T, lambda a: a.T[::-1, ::-1]),
)


def main(argv=None):
    import hyperspy.api as hs

    import hyperspy_partialscan as hps
    from hyperspy_partialscan.metrics import blur_target, rmse_percent

    p = C.base_parser(__doc__.splitlines()[0], model_task="completion")
    p.add_argument("--max-images", type=int, default=None)
    args = C.setup(p.parse_args(argv))
    crops, _ = C.val_crops(max_images=args.max_images, per_image=2, size=512, seed=args.seed)
    rmse = {path: [] for path in PATHS}
    for label, x in crops:
        blurred = blur_target(x)
        for path in PATHS:
            scan = hps.to_partial_scan(hs.signals.Signal2D(x), path, 1 / 20, seed=C.frame_key(label, path))
            data = np.asarray(scan.data)
            outs = []
            for forward, inverse in SYMMETRIES:
                c = hps.complete_partial_scan(hs.signals.Signal2D(np.ascontiguousarray(forward(data))),
                                              model=args.model, device="cpu", keep_measured=False,
                                              show_progressbar=False)
                outs.append(inverse(np.asarray(c.data)))
            linear = np.asarray(hps.complete_partial_scan(scan, method="linear", show_progressbar=False).data)
            rmse[path].append([rmse_percent(np.mean(outs[:k], 0), blurred) for k in SIZES]
                              + [rmse_percent(linear, blurred)])
        print(label, flush=True)
    rows = []
    for path, r in rmse.items():
        mean = np.mean(r, axis=0)
        rows.append({"path": path, "crops": len(r), **{f"x{k}_vs_linear": round(float(m / mean[-1]), 4)
                                                        for k, m in zip(SIZES, mean[:-1])}})
    print(C.markdown_table(rows))
    if args.out:
        C.write_csv(rows, args.out / "eval_dihedral_ensemble.csv")
    return rows


if __name__ == "__main__":
    main()
