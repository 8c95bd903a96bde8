"""The lazy pipeline on a dask.distributed cluster gives the threaded-scheduler result."""

import numpy as np
import pytest
from pshelpers import make_signal

import hyperspy_partialscan as hp

distributed = pytest.importorskip("distributed")

NOISE = {"dose": 20.0, "line_jitter": 0.2}


def _pipeline(s):
    p = hp.to_partial_scan(s, "spiral", 0.1, seed=1, vary_per_frame=True, noise=NOISE)
    return p, hp.complete_partial_scan(p, "linear", navigation_chunks=2)


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_distributed_equals_threaded(processes):
    s = make_signal((2, 3), True, 48)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=processes, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        partial, completed = _pipeline(s)
        # explicitly on the cluster (with processes=True the graph is pickled to the worker process)
        p_cluster, c_cluster = client.gather(client.compute([partial.data, completed.data]))
        c_default = completed.data.compute()  # the client is the default scheduler now
    partial, completed = _pipeline(s)
    p_threaded = partial.data.compute(scheduler="threads")
    c_threaded = completed.data.compute(scheduler="threads")
    assert np.isnan(p_threaded).any() and np.isfinite(c_threaded).all()
    np.testing.assert_array_equal(p_cluster, p_threaded)
    np.testing.assert_array_equal(c_cluster, c_threaded)
    np.testing.assert_array_equal(c_default, c_threaded)


@pytest.mark.slow
def test_a_killed_worker_changes_nothing():
    """A worker process killed (SIGKILL) mid-computation: its tasks run again elsewhere, the result is exact."""
    import os
    import signal
    import time

    s = make_signal((8,), True, 64)
    expected = _pipeline(s)[1].data.compute(scheduler="threads")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        _, completed = _pipeline(s)
        future = client.compute(completed.data)
        pids = client.run(os.getpid)
        deadline = time.time() + 60
        while not any(client.processing().values()) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        result = future.result(timeout=300)
    np.testing.assert_array_equal(result, expected)
