"""Search metrics shared by the samplers and the report (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["hypervolume"]


def hypervolume(points: np.ndarray | list, reference: tuple[float, float] = (1.0, 1.0)) -> float:
    """Area dominated by 2-D points (both minimised) up to ``reference``; points beyond it count nothing."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[(pts[:, 0] < reference[0]) & (pts[:, 1] < reference[1])]
    area, best_y = 0.0, reference[1]
    for x, y in pts[np.lexsort((pts[:, 1], pts[:, 0]))]:  # by x, then y: each point adds the strip below best_y
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return area
