"""Deep check (``validate-biomech --deep``): fit the model's pose and a camera to one annotation.

Parameters: every joint coordinate of the model inside its range of motion, the body's orientation
(three Euler angles) and a weak-perspective camera (log scale, 2D offset). The forward kinematics is
the model's numpy export (equal to OpenSim's, tested), batched so that a finite-difference Jacobian
costs one vectorised call. ``scipy.optimize.least_squares`` (trust region, bounds) runs from four
starting orientations (front, back, both sides) since depth is ambiguous in 2D; the best fit wins.
Reported: the residual of each keypoint in torso lengths and the coordinates pinned at a range limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..findings import Finding
from ..io import MISSING_ID
from ..persons import Persons
from ..progress import progress
from .geometry import BodyGeometry, torso_fraction
from .model import KinematicModel, default_model, euler, forward_kinematics


@dataclass
class FitResult:
    residuals: np.ndarray  # [K] per-keypoint residual in torso lengths (NaN where not labelled)
    pinned: list[str]  # coordinates at a range limit
    coordinates: dict[str, float]  # fitted joint angles, radians
    cost: float
    evaluations: int


class PoseFitter:
    """Fits ``model`` to 2D keypoints; build once, call ``fit`` per annotation."""

    def __init__(self, model: KinematicModel | None = None, prior: float = 0.02):
        self.model = model or default_model()
        self.coords = self.model.coordinate_names()
        self.lo = np.array([self.model.ranges[b, a, 0] for b, a, _ in self.coords])
        self.hi = np.array([self.model.ranges[b, a, 1] for b, a, _ in self.coords])
        self.prior = prior
        self.nq = len(self.coords)

    def _pose(self, params: np.ndarray) -> np.ndarray:
        """[P, M, 2] projected markers for parameter vectors [P, nq + 6]."""
        p = len(params)
        angles = np.zeros((p, len(self.model.body_names), 3))
        for i, (b, a, _) in enumerate(self.coords):
            angles[:, b, a] = params[:, i]
        root = euler(params[:, self.nq:self.nq + 3])
        pts, _ = forward_kinematics(self.model, angles, root)
        scale = np.exp(params[:, self.nq + 3])[:, None, None]
        xy = np.stack([pts[..., 0], -pts[..., 1]], axis=-1) * scale  # image y points down
        return xy + params[:, None, self.nq + 4:self.nq + 6]

    def fit(self, keypoints: np.ndarray, stature_px: float, starts: int = 4) -> FitResult:
        """Fit one annotation's [K, 3] keypoints (K = the model's markers, same order)."""
        from scipy.optimize import least_squares

        lab = (keypoints[:, 2] > 0) & np.isfinite(keypoints[:, :2]).all(axis=1)
        obs = keypoints[:, :2]
        torso = max(stature_px * torso_fraction(), 1e-6)
        w = np.sqrt(lab.astype(float))

        def residuals(x: np.ndarray) -> np.ndarray:
            return self._residuals(x[None], obs, w, torso)[0]

        def jac(x: np.ndarray) -> np.ndarray:
            h = 1e-6
            xs = np.repeat(x[None], len(x) + 1, axis=0)
            xs[1:] += np.eye(len(x)) * h
            r = self._residuals(xs, obs, w, torso)
            return ((r[1:] - r[0]) / h).T

        centre = np.nanmean(np.where(lab[:, None], obs, np.nan), axis=0)
        roll = self._roll(obs, lab)
        lo = np.concatenate([self.lo, [-4 * np.pi] * 3, [-np.inf] * 3])
        hi = np.concatenate([self.hi, [4 * np.pi] * 3, [np.inf] * 3])
        best = None
        evals = 0
        for k in range(starts):
            # body orientation: roll in the image plane from the torso axis, yaw from the start index
            x0 = np.concatenate([np.clip(0.0, self.lo, self.hi), [0.0, roll, 2 * np.pi * k / starts],
                                 [np.log(stature_px)], centre])
            r = least_squares(residuals, x0, jac=jac, bounds=(lo, hi), method="trf", max_nfev=60, x_scale="jac")
            evals += r.nfev
            if best is None or r.cost < best.cost:
                best = r
        x = best.x
        xy = self._pose(x[None])[0]
        res = np.where(lab, np.linalg.norm(xy - obs, axis=1) / torso, np.nan)
        q = x[:self.nq]
        span = self.hi - self.lo
        pinned = [name for (_, _, name), v, a, b, s in zip(self.coords, q, self.lo, self.hi, span)
                  if min(v - a, b - v) < 0.01 * s]
        return FitResult(res, pinned, {name: float(v) for (_, _, name), v in zip(self.coords, q)},
                         float(best.cost), evals)

    def _roll(self, obs: np.ndarray, lab: np.ndarray) -> float:
        """Rotation about the view axis that turns the model's up into the annotation's hip->neck axis."""
        names = self.model.marker_names
        up_pts = [names.index(n) for n in ("neck", "left_shoulder", "right_shoulder") if n in names]
        low_pts = [names.index(n) for n in ("hip", "left_hip", "right_hip") if n in names]
        up_ok, low_ok = [i for i in up_pts if lab[i]], [i for i in low_pts if lab[i]]
        if not up_ok or not low_ok:
            return 0.0
        u = obs[up_ok].mean(axis=0) - obs[low_ok].mean(axis=0)
        return float(np.arctan2(-u[0], -u[1]))

    def _residuals(self, xs: np.ndarray, obs: np.ndarray, w: np.ndarray, torso: float) -> np.ndarray:
        d = (self._pose(xs) - obs[None]) / torso * w[None, :, None]
        d = np.nan_to_num(d.reshape(len(xs), -1))
        prior = self.prior * xs[:, :self.nq]  # weak pull towards the neutral pose for unobservable DOFs
        return np.concatenate([d, prior], axis=1)


DEEP_SPINE_RESIDUAL = 0.08  # torso lengths; plausible fits stay under 0.05, a 20% bend leaves 0.14-0.34


def deep_findings(ds: Persons, rows: np.ndarray, fitter: PoseFitter | None = None) -> list[Finding]:
    """Findings of the deep fit of the persons at ``rows``: spine residual and pinned coordinates."""
    fitter = fitter or PoseFitter()
    g = BodyGeometry(ds)
    chain = ds.skeleton.spine_chain
    names = ds.skeleton.names
    out = []
    for r in progress(rows, total=len(rows), description="fitting the model (deep check)"):
        res = fitter.fit(ds.keypoints[r], float(g.stature[r]))
        aid = None if ds.ann_ids[r] == MISSING_ID else int(ds.ann_ids[r])
        iid = None if ds.image_ids[r] == MISSING_ID else int(ds.image_ids[r])
        per_kp = {names[k]: round(float(v), 4) for k, v in enumerate(res.residuals) if np.isfinite(v)}
        spine = np.nanmax(res.residuals[chain]) if np.isfinite(res.residuals[chain]).any() else np.nan
        worst = [names[k] for k in chain if res.residuals[k] > DEEP_SPINE_RESIDUAL]
        values = {"residuals": per_kp, "pinned": res.pinned}
        if spine > DEEP_SPINE_RESIDUAL:
            out.append(Finding("biomech_deep_fit", "error", aid, iid,
                               f"no pose of the model fits the spine: residual {spine:.2f} torso lengths "
                               f"(bound {DEEP_SPINE_RESIDUAL})", score=float(spine), keypoints=worst, values=values))
        else:
            out.append(Finding("biomech_deep_fit", "info", aid, iid,
                               f"the model fits: spine residual {spine:.2f} torso lengths", score=float(spine),
                               values=values))
        if res.pinned:
            out.append(Finding("biomech_pinned", "warning" if len(res.pinned) > 3 else "info", aid, iid,
                               f"{len(res.pinned)} coordinates at a range limit: {', '.join(res.pinned[:6])}",
                               score=float(len(res.pinned)), values={"pinned": res.pinned}))
    return out
