from pathlib import Path

import numpy as np
import pytest

CASES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cases"

#: Settings that make a fit take a fraction of a second in tests.
TINY = dict(n_iter=4, n_runs=3, n_workers=0, seed=0)


@pytest.fixture
def cases_dir() -> Path:
    if not any(CASES.glob("*.npz")):
        pytest.skip(f"shared reference cases not found at {CASES} (the ../shared folder "
                    f"beside the repository is absent)")
    return CASES


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
