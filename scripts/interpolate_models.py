"""Interpolate the weights of a network and its fine-tune (WiSE-FT), recording both in the JSON.

    python scripts/interpolate_models.py START END FRACTION OUT.safetensors

Both of one task (completion, denoising or uncertainty). ``END`` must descend from ``START`` by fine-tuning
(its training record names START's SHA-256 somewhere in its chain of inits); a non-local block or inner
blocks that END grew are grown onto START as the identity first
(`hyperspy_partialscan.models.growth.interpolate_weights`). The output's JSON keeps END's training record
and adds ``interpolated``: START's name and SHA-256 and the fraction (0: START, 1: END).
"""

from __future__ import annotations

import argparse

from hyperspy_partialscan.models import load_model, save_model
from hyperspy_partialscan.models.growth import interpolate_weights


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("start")
    ap.add_argument("end")
    ap.add_argument("fraction", type=float)
    ap.add_argument("out")
    a = ap.parse_args(argv)
    end = load_model(a.end)
    start = load_model(a.start, task=end.task)
    if start.sha256 not in [(record.get("init") or {}).get("sha256") for record in end.lineage]:
        raise SystemExit(f"error: {a.end} was not fine-tuned from {a.start} (sha256 {start.sha256[:12]}...)")
    mixed = interpolate_weights(start.network, end.network, a.fraction)
    extra = {k: v for k, v in end.config.items() if k in ("package_version", "inputs", "training", "validation")}
    extra["interpolated"] = {"method": "weights (1 - fraction) * start + fraction * end (WiSE-FT)",
                             "start": {"name": start.name, "sha256": start.sha256}, "end_sha256": end.sha256,
                             "fraction": a.fraction}
    path = save_model(mixed, a.out, task=end.task, architecture=end.config["architecture"], extra=extra)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
