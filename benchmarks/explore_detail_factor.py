"""Exploration: could the detail factor predict each crop's error level better? (issue 12; `train` files only)

The calibration (``training.calibrate_uncertainty``) fits one detail exponent ``gamma`` for all path
families and coverages, and the detail energy includes the measurement noise. This script rebuilds the
calibration's crops and scans (the held-out `train` files, the same seeds), keeps per crop and case
the numbers the detail factor needs (mean sigma² after the structure factor, the detail energy, the
detail energy of the measurement noise alone, from one draw of noise with the frame's variance model
on the same samples) and the actual mean squared error, and compares, by the spread over crops of
``log(predicted / actual RMSE)`` and the fraction of crops within ±25 % once each case is centred:

* one ``gamma`` for every case (the shipped rule) against one per path family and coverage;
* the detail energy less ``kappa`` times the noise's share, for ``kappa`` 0 to 1.

Never the val split.

    python benchmarks/explore_detail_factor.py [--model uncertainty_default] [--threads 2]
"""

from __future__ import annotations

import _common as C  # noqa: I001 - first: sets the thread limits before numpy loads
import numpy as np

GAMMAS = np.round(np.arange(0.0, 1.21, 0.1), 2)
KAPPAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _records(model, frames, alpha):
    """Per crop and case of the calibration: mean sigma² (structure factor applied), MSE, detail energies."""
    import torch

    from hyperspy_partialscan.metrics import blur_target
    from hyperspy_partialscan.models import load_model
    from hyperspy_partialscan.models.features import completion_inputs, sampled_noise_sd
    from hyperspy_partialscan.training import uncertainty as T
    from hyperspy_partialscan.uncertainty import detail_energy, mean_gap

    unc = load_model(model, task="uncertainty")
    gen = load_model(unc.config["generator"]["name"], task="completion")
    gen_net, unc_net = gen.on(torch.device("cpu")), unc.on(torch.device("cpu"))
    noise_rng, rows = np.random.default_rng(5), []
    for path, coverage, x, partial, noise, known in T.calibration_scans(T.calibration_crops(frames)):
        r = T._predict(gen_net, unc_net, partial, noise, known)
        m = r["unsampled"]
        base = r["sigma"] * np.exp(alpha * r["contrast"])
        inputs, ((_, scale),) = completion_inputs(partial[None])
        vm = T.noise_variance_model(noise) if known else T.blind_variance_model(partial)
        sd = sampled_noise_sd(r["completion"], scale, vm) * scale
        noise_only = np.where(np.isfinite(partial), sd * noise_rng.standard_normal(sd.shape), np.nan)
        rows.append({"case": (path, coverage), "s2": float(np.mean(base[m].astype(np.float64) ** 2)),
                     "e2": float(np.mean((r["completion"] - blur_target(x))[m].astype(np.float64) ** 2)),
                     "energy": r["energy"], "noise_energy": detail_energy(noise_only, gap=mean_gap(inputs[0]))})
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
    spreads, within = [], []
    for key, rows in cases.items():
        lr = _log_ratios(rows, gamma_of(key), kappa)
        spreads.append(np.std(lr))
        within.append(np.mean(np.abs(np.exp(lr - np.median(lr)) - 1) <= 0.25))
    return float(np.mean(spreads)), float(np.mean(within))


def main(argv=None):
    import json

    from explore_uncertainty_heldout import _held_out_frames

    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="uncertainty_default", help="uncertainty model (name or .safetensors path)")
    p.add_argument("--data", default=None, help="sample data folder (default: ../shared/data)")
    args = C.setup(p.parse_args(argv))
    from hyperspy_partialscan.io import default_data_dir
    from hyperspy_partialscan.models import load_model

    alpha = float(load_model(args.model, task="uncertainty").config["calibration"]["structure"]["alpha"])
    rows = [r for r in _records(args.model, _held_out_frames(args.data or default_data_dir()), alpha)
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
    C.write_csv(table, args.out / "explore_detail_factor.csv")
    print(C.markdown_table([{k: v for k, v in r.items() if k != "gammas"} for r in table]))


if __name__ == "__main__":
    main()
