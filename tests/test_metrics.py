"""Search metrics: the hypervolume against Optuna's and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume

from edgenas.metrics import hypervolume


def test_hypervolume_equals_optunas_and_by_hand():
    rng = np.random.default_rng(0)
    for n in (1, 5, 40):
        pts = rng.uniform(0, 1.2, size=(n, 2))
        inside = pts[(pts < 1.0).all(1)]
        expected = compute_hypervolume(inside, np.array([1.0, 1.0])) if len(inside) else 0.0
        assert hypervolume(pts) == pytest.approx(expected)
    assert hypervolume([[0.5, 0.5]]) == pytest.approx(0.25) and hypervolume([]) == 0.0
    assert hypervolume([[0.5, 0.5], [0.25, 0.75]]) == pytest.approx(0.25 + 0.25 * 0.25)
