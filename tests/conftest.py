import os

import pytest

# Tests run on 2 shared cores: one intra-op thread avoids OpenMP oversubscription stalls.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny():
    from prorl.models import load_policy

    model, tok = load_policy("tiny")
    return model, tok


@pytest.fixture(scope="module")
def cluster():
    """A private local Ray cluster for one test module (the ``-m ray`` tests)."""
    import ray

    # as prorl.scale does for its own local cluster: no Ray OOM kills caused by other
    # processes on a shared machine (a real kill is what the fault tests inject)
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=6, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()
