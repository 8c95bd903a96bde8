"""Exploration: how far could any gain map take adaptive scanning? An oracle that knows the true error (issue 15).

``bench_adaptive.py`` with its planner's gain replaced by what no real planner knows: the squared error
of the completion of the scan so far against the blurred truth (at the planner's resolution, smoothed
by a 1 px Gaussian). Everything else is the benchmark's: crops, noise, the segment rule
(``choose_segments``, default segment length), re-planning after each step, the scoring. Whatever this
oracle cannot reach on a group of crops, no gain map driving the same segment rule and generator can.
Options are ``bench_adaptive.py``'s (``--gain`` is ignored: the oracle replaces the curvature gain).

    python benchmarks/explore_adaptive_oracle.py --threads 2 --coverages 1/20 --out DIR
"""

from __future__ import annotations

import _common as C  # noqa: F401, I001 - first: sets the thread limits before numpy loads
import bench_adaptive as B

_TRUTH = {}


def _oracle_gain(self, partial, footprint):
    """The squared error of the planner's completion against the blurred truth (zero where scanned)."""
    from scipy.ndimage import gaussian_filter

    from hyperspy_partialscan.blocks import block_mean

    view, factor = self._view(partial)
    completion, _ = self._complete(view, uncertainty=False)
    truth = block_mean(_TRUTH["blurred"], factor) if factor > 1 else _TRUTH["blurred"]
    return self._gain_map(partial, gaussian_filter((completion - truth) ** 2, 1.0), factor)


def main(argv=None):
    from hyperspy_partialscan.metrics import blur_target
    from hyperspy_partialscan.planners import UncertaintyPlanner

    scans = B._scans

    def with_truth(x, coverage, args, key):
        _TRUTH["blurred"] = blur_target(x)
        return scans(x, coverage, args, key)

    B._scans = with_truth
    UncertaintyPlanner.curvature = _oracle_gain
    B.main(argv)


if __name__ == "__main__":
    main()
