import os

import pytest

# Tests run on 2 shared cores: one intra-op thread avoids OpenMP oversubscription stalls.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny():
    from prorl.models import load_policy

    model, tok = load_policy("tiny")
    return model, tok
