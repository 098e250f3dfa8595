"""Object keypoint similarity (OKS), as COCO / xtcocotools compute it."""

from __future__ import annotations

import numpy as np


def oks(gt: np.ndarray, dt: np.ndarray, area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS between paired persons: ``gt`` and ``dt`` [N, K, 3], ``area`` [N] of the ground truth.

    Mean of exp(-d^2 / (2 * area * (2 sigma)^2)) over the ground truth's labelled points (v > 0);
    NaN where the ground truth has no labelled point.
    """
    var = (2 * np.asarray(sigmas)) ** 2
    d2 = ((gt[..., :2] - dt[..., :2]) ** 2).sum(axis=-1)
    e = d2 / (2 * np.maximum(area, np.spacing(1))[:, None] * var[None])
    vis = gt[..., 2] > 0
    n = vis.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (np.exp(-e) * vis).sum(axis=1) / n, np.nan)
