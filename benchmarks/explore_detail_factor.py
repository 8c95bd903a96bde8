"""Exploration: could the detail factor predict each crop's error level better? (issue 12; `train` files only)

The calibration (``training.calibrate_uncertainty``) fits one detail exponent ``gamma`` for all path
families and coverages, and the detail energy includes the measurement noise. This script rebuilds the
calibration's crops and scans (the held-out `train` files, the same seeds), keeps per crop and case
the numbers the detail factor needs (mean sigma² after the structure factor, the detail energy, the
detail energy of the measurement noise alone, from one draw of noise with the frame's variance model
on the same samples) and the actual mean squared error, and compares, by the spread over crops of
``log(predicted / actual RMSE)`` and the fraction of crops within ±25 % once each case is centred:

* one ``gamma`` for every case (the shipped rule) against one per path family and coverage;
* the detail energy less ``kappa`` times the noise's share, for ``kappa`` 0 to 1;
* on top of the shipped rule, a correction learnt from the samples' semivariogram at lags of 1–4 px
  (:func:`variogram`; the specimen's variation at the scales the completion must bridge, noise
  included), by ridge regression of each crop's log ratio on ``log(variogram / sigma)``, fitted with
  each file left out in turn and scored on it;
* for reference, hindsight power laws fitted per case on the crops they score: of the truth's detail
  finer than the sampling gaps (``_common.truth_detail``, which knows the truth), and of the samples'
  detail energy alone.

Never the val split.

    python benchmarks/explore_detail_factor.py [--model uncertainty_default] [--threads 2]
"""

from __future__ import annotations

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

GAMMAS = np.round(np.arange(0.0, 1.21, 0.1), 2)
KAPPAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: lags (px) of the semivariogram, and the ridge penalty of the regression on it
LAGS, RIDGE = (1, 2, 3, 4), 1.0


def variogram(partial, lags=LAGS):
    """Semivariogram of a partial scan's samples: half the mean squared difference of sample pairs ``lag`` px apart.

    Pairs along rows, columns and both diagonals (diagonal offsets rounded to whole pixels); NaN at a lag
    with 20 pairs or fewer.

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.tile(np.arange(32.0), (32, 1))  # x: rows differ by 0, columns by the lag
    >>> variogram(ramp, (1, 2)).round(3).tolist()
    [0.373, 0.75]
    """
    x = np.asarray(partial, np.float64)
    h, w = x.shape
    out = []
    for lag in lags:
        d = max(1, round(lag / np.sqrt(2)))
        diffs = []
        for dy, dx in ((0, lag), (lag, 0), (d, d), (d, -d)):
            diff = x[: h - dy, max(0, -dx) : w - max(0, dx)] - x[dy:, max(0, dx) : w - max(0, -dx)]
            diffs.append(diff[np.isfinite(diff)])
        diffs = np.concatenate(diffs)
        out.append(0.5 * np.mean(diffs**2) if diffs.size > 20 else np.nan)
    return np.array(out)


def _labelled_crops(labelled, crop=256):
    """The calibration crops (:func:`~hyperspy_partialscan.training.uncertainty.calibration_crops`), their files."""
    from hyperspy_partialscan.training.crops import normalised_crops

    rng, crops, files = np.random.default_rng(2468), [], []
    for label, frame in labelled:  # crop by crop from one generator: the calibration's crops, in order
        for x in normalised_crops([frame], crop, 2, rng):
            crops.append(x)
            files.append(label.split("[")[0])
    return crops, files


def _records(model, labelled, alpha, crop=256):
    """Per crop and case of the calibration: mean sigma² (structure factor applied), MSE, detail energies,
    semivariogram, RMS truth detail and file."""
    import torch

    from hyperspy_partialscan.metrics import blur_target
    from hyperspy_partialscan.models import load_model
    from hyperspy_partialscan.models.features import completion_inputs, sampled_noise_sd
    from hyperspy_partialscan.training import uncertainty as T
    from hyperspy_partialscan.uncertainty import detail_energy, mean_gap

    unc = load_model(model, task="uncertainty")
    gen = load_model(unc.config["generator"]["name"], task="completion")
    gen_net, unc_net = gen.on(torch.device("cpu")), unc.on(torch.device("cpu"))
    crops, files = _labelled_crops(labelled, crop)
    file_of = {id(x): f for x, f in zip(crops, files)}
    noise_rng, rows = np.random.default_rng(5), []
    for path, coverage, x, partial, noise, known in T.calibration_scans(crops):
        r = T._predict(gen_net, unc_net, partial, noise, known)
        m = r["unsampled"]
        base = r["sigma"] * np.exp(alpha * r["contrast"])
        inputs, ((_, scale),) = completion_inputs(partial[None])
        vm = T.noise_variance_model(noise) if known else T.blind_variance_model(partial)
        sd = sampled_noise_sd(r["completion"], scale, vm) * scale
        noise_only = np.where(np.isfinite(partial), sd * noise_rng.standard_normal(sd.shape), np.nan)
        target = blur_target(x)
        rows.append({"case": (path, coverage), "s2": float(np.mean(base[m].astype(np.float64) ** 2)),
                     "e2": float(np.mean((r["completion"] - target)[m].astype(np.float64) ** 2)),
                     "energy": r["energy"], "noise_energy": detail_energy(noise_only, gap=mean_gap(inputs[0])),
                     "variogram": variogram(partial), "file": file_of[id(x)],
                     "truth_detail": float(np.sqrt(np.mean(C.truth_detail(target, m)[m] ** 2)))})
    return rows


def _log_ratios(rows, gamma, kappa):
    """log(predicted / actual RMSE) per crop with the detail factor of exponent ``gamma``, noise share ``kappa``."""
    from hyperspy_partialscan.uncertainty import detail_log_ratio

    out, one = [], np.ones(1, bool)
    for r in rows:  # the package's detail factor, on the crop's rms sigma
        ratio = detail_log_ratio(r["energy"] - kappa * r["noise_energy"], np.sqrt([r["s2"]]), one)
        out.append(0.5 * np.log(r["s2"]) + gamma * ratio - 0.5 * np.log(r["e2"]))
    return np.array(out)


def _score(cases, gamma_of, kappa):
    """(mean spread of the log ratios over cases, mean fraction of crops within ±25 % once each case is centred)."""
    return _spread_within([_log_ratios(rows, gamma_of(key), kappa) for key, rows in cases.items()])


def _spread_within(log_ratios):
    """(mean spread, mean fraction within ±25 % once centred on the median) of each case's log ratios."""
    spreads = [np.std(lr) for lr in log_ratios]
    within = [C.within_25pct(np.exp(lr - np.median(lr))) for lr in log_ratios]
    return float(np.mean(spreads)), float(np.mean(within))


def _variogram_score(cases, gamma):
    """:func:`_score` of the shipped rule corrected by the regression on the semivariogram, each file left out."""
    rows = [r for rs in cases.values() for r in rs if np.all(r["variogram"] > 0)]
    case = np.array([list(cases).index(r["case"]) for r in rows])
    y = np.concatenate([_log_ratios([r], gamma, 0.0) for r in rows])
    x = np.array([0.5 * np.log(r["variogram"] / r["s2"]) for r in rows])
    files = np.array([r["file"] for r in rows])
    pred = np.zeros_like(y)
    for f in np.unique(files):
        fit, xc, yc = files != f, x.copy(), y.copy()
        for c in np.unique(case):  # centred per case on the fitting rows (each case has its own scale)
            xc[case == c] -= x[fit & (case == c)].mean(0)
            yc[case == c] -= y[fit & (case == c)].mean()
        w = np.linalg.solve(xc[fit].T @ xc[fit] + RIDGE * np.eye(x.shape[1]), xc[fit].T @ yc[fit])
        pred[~fit] = xc[~fit] @ w
    return _spread_within([(y - pred)[case == c] for c in np.unique(case)])


def main(argv=None):
    import json

    from explore_uncertainty_heldout import _held_out_frames

    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="uncertainty_default", help="uncertainty model (name or .safetensors path)")
    p.add_argument("--data", default=None, help="sample data folder (default: ../shared/data)")
    p.add_argument("--crop", type=int, default=256, help="side of the crops (default: the calibration's 256)")
    args = C.setup(p.parse_args(argv))
    from hyperspy_partialscan.io import default_data_dir
    from hyperspy_partialscan.models import load_model
    from hyperspy_partialscan.uncertainty import detail_gamma

    calibration = load_model(args.model, task="uncertainty").config["calibration"]
    alpha = float(calibration["structure"]["alpha"])
    labelled = _held_out_frames(args.data or default_data_dir(), labelled=True)
    rows = [r for r in _records(args.model, labelled, alpha, args.crop)
            if r["e2"] > 0 and np.isfinite(r["energy"])]
    cases = {}
    for r in rows:
        cases.setdefault(r["case"], []).append(r)
    table = []
    for kappa in KAPPAS:
        best = min(GAMMAS, key=lambda g: _score(cases, lambda key: g, kappa)[0])
        per_case = {key: min(GAMMAS, key=lambda g: np.std(_log_ratios(rs, g, kappa))) for key, rs in cases.items()}
        for rule, gamma_of in (("one gamma", lambda key, g=best: g), ("gamma per case", per_case.get)):
            spread, within = _score(cases, gamma_of, kappa)
            table.append({"kappa": kappa, "rule": rule, "spread": spread, "crops_within_25pct": within,
                          "gammas": f"{best:g}" if rule == "one gamma" else json.dumps(
                              {f"{k[0]} 1/{round(1 / k[1])}": float(v) for k, v in per_case.items()})})
    gamma = detail_gamma(calibration)
    spread, within = _variogram_score(cases, gamma)
    table.append({"kappa": 0.0, "rule": "shipped gamma + variogram (file left out)", "spread": spread,
                  "crops_within_25pct": within, "gammas": f"{gamma:g}"})
    for rule, key in (("reference: hindsight power law of the truth detail", "truth_detail"),
                      ("reference: hindsight power law of the detail energy", "energy")):
        spread, within = _spread_within([C.power_law_log_ratios([np.sqrt(r["e2"]) for r in rs], [r[key] for r in rs])
                                         for rs in cases.values()])
        table.append({"kappa": 0.0, "rule": rule, "spread": spread, "crops_within_25pct": within, "gammas": ""})
    C.write_csv(table, args.out / "explore_detail_factor.csv")
    print(C.markdown_table([{k: v for k, v in r.items() if k != "gammas"} for r in table]))


if __name__ == "__main__":
    main()
