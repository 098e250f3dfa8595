"""Deep check (``validate-biomech --deep``, the gate's second stage): fit the model's pose and a camera.

Parameters: every joint coordinate of the model inside its range of motion, the body's orientation
(three Euler angles) and a weak-perspective camera (log scale, 2D offset). The forward kinematics is
the model's numpy export (equal to OpenSim's, tested) with its exact Jacobian (each coordinate turns the
markers below it about its joint axis). A batched, bounded Levenberg-Marquardt solves many annotations
and starting points at once: four starting orientations (front, back, both sides, since depth is
ambiguous in 2D), then, for every limb the best fit leaves off, a grid of limb postures (an arm or a leg
reaching forwards or backwards is the same in 2D until the rest of the body decides), and last, for an
annotation the model's own body still leaves off, the person's build as well: each ANSUR measure's factor on
the model's segments and the annotator's placement habits, within the population's ranges
(``population.build_bounds``; their derivatives by differences, exact since the markers are affine in them).
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
from .model import KinematicModel, default_model, euler, kinematics, rot
from .population import CURVES, HABITS, build_bounds, build_geometry, curve_offsets

# torso lengths beyond what annotation noise explains (``DEEP_NOISE_K`` x noise x sigma_k x sqrt(area)): chosen on
# the calibration seed (0) with people of every build, the gate's first stage and noise 0.1-0.5 (the README's table)
DEEP_SPINE_RESIDUAL = 0.04
DEEP_NOISE_K = 1.0
LIMB_RESTART = 0.04  # torso lengths: a limb fitted worse than this is restarted from its grid of postures
BUILD_REFIT = 0.03  # torso lengths: an annotation fitted worse than this by the model's body is refitted with its build
LIMBS = {  # limb -> (bodies whose coordinates restart, start grid in degrees per (body, axis))
    "arm": (("upper_arm", "forearm"), {("upper_arm", 0): (-150, -90, -30, 30), ("upper_arm", 1): (0, 80),
                                       ("forearm", 0): (-20, -110)}),
    "leg": (("thigh", "shank"), {("thigh", 0): (-100, -50, 0), ("thigh", 2): (-30, 30), ("shank", 0): (10, 90)}),
}


@dataclass
class FitResult:
    residuals: np.ndarray  # [K] per-keypoint residual in torso lengths (NaN where not labelled)
    pinned: list[str]  # coordinates at a range limit
    coordinates: dict[str, float]  # fitted joint angles, radians
    build: dict[str, float]  # fitted measure factors and placement habits (the model's own: factors 1, habits 0)
    cost: float
    evaluations: int


@dataclass
class BatchFit:
    """Fits of N annotations as arrays."""

    residuals: np.ndarray  # [N, K] torso lengths, NaN where not labelled
    params: np.ndarray  # [N, P] coordinates, orientation, log scale, offset, build
    pinned: np.ndarray  # [N, nq] coordinate within 1% of its range from a limit
    cost: np.ndarray  # [N]
    iterations: int


class PoseFitter:
    """Fits ``model`` to 2D keypoints; build once, then ``fit`` one annotation or ``fit_batch`` many."""

    def __init__(self, model: KinematicModel | None = None, prior: float = 0.02, iterations: int = 120,
                 builds: bool = True):
        self.model = model or default_model()
        self.coords = self.model.coordinate_names()
        self.names = [name for _, _, name in self.coords]
        self.lo = np.array([self.model.ranges[b, a, 0] for b, a, _ in self.coords])
        self.hi = np.array([self.model.ranges[b, a, 1] for b, a, _ in self.coords])
        self.prior = prior
        self.iterations = iterations
        self.builds = builds  # refit the build where the model's own body does not fit
        self.nq = len(self.coords)
        self.body = np.array([b for b, _, _ in self.coords])
        self.axis = np.array([a for _, a, _ in self.coords])
        # marker m moves with coordinate j when j's body is the marker's body or one of its ancestors
        m = self.model
        below = np.zeros((len(m.body_names), len(m.body_names)), dtype=bool)  # below[b, c]: c is b or above b
        for b in range(len(m.body_names)):
            c = b
            while c >= 0:
                below[b, c] = True
                c = m.parents[c]
        self.moves = below[m.marker_body][:, self.body].astype(np.float64)  # [M, nq]
        self.build_names, self.b_lo, self.b_hi = build_bounds(self.model)
        self.b0 = np.where(np.isin(self.build_names, HABITS + tuple(CURVES)), 0.0, 1.0)  # the model's own body
        self.pose_size = self.nq + 6
        self.p_lo = np.concatenate([self.lo, [-4 * np.pi] * 3, [-np.inf] * 3, self.b_lo])
        self.p_hi = np.concatenate([self.hi, [4 * np.pi] * 3, [np.inf] * 3, self.b_hi])
        # the prior's weights and centre: coordinates towards neutral, a build towards the model's (per its range)
        self.p_weight = np.concatenate([np.full(self.nq, prior ** 2), np.zeros(6),
                                        prior ** 2 / (self.b_hi - self.b_lo) ** 2])
        self.p_centre = np.concatenate([np.zeros(self.pose_size), self.b0])

    # model and derivatives -----------------------------------------------------------------------------
    def _project(self, x: np.ndarray, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """[P, M, 2] projected markers for parameters [P, nq + 6] (the model's body) or [P, nq + 6 + builds],
        and their Jacobian [P, M, 2, same]."""
        n, nq = len(x), self.nq
        angles = np.zeros((n, len(self.model.body_names), 3))
        angles[:, self.body, self.axis] = x[:, :nq]
        root_angles = x[:, nq:nq + 3]
        rest: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if x.shape[1] > self.pose_size:
            rest = build_geometry(self.model, x[:, self.pose_size:])
            angles[..., 0] += curve_offsets(self.model, x[:, x.shape[1] - len(CURVES):])
        k = kinematics(self.model, angles, euler(root_angles), *rest)
        scale = np.exp(np.clip(x[:, nq + 3], -30, 30))[:, None, None]
        flip = np.array([1.0, -1.0])  # image y points down
        xy = k.markers[..., :2] * flip * scale + x[:, None, nq + 4:nq + 6]
        if not jacobian:
            return xy, None
        omega = k.axes[:, self.body, :, self.axis].transpose(1, 0, 2)[:, None]  # [n, 1, nq, 3]
        lever = k.markers[:, :, None] - k.centres[:, None, self.body]  # [n, M, nq, 3]
        # the image-plane components of omega x lever, where the coordinate moves the marker
        dx = (omega[..., 1] * lever[..., 2] - omega[..., 2] * lever[..., 1]) * self.moves
        dy = (omega[..., 2] * lever[..., 0] - omega[..., 0] * lever[..., 2]) * self.moves
        # the body's orientation Rx(r1) Rz(r2) Ry(r3) about the pelvis joint at the origin
        ex = np.broadcast_to([1.0, 0.0, 0.0], (n, 3))
        rz = rot(0, root_angles[:, 0]) @ np.array([0.0, 0.0, 1.0])
        ry = euler(root_angles)[..., 1]
        w = np.stack([ex, rz, ry], 1)[:, None]  # [n, 1, 3, 3]
        p = k.markers[:, :, None]
        rx_ = w[..., 1] * p[..., 2] - w[..., 2] * p[..., 1]
        ry_ = w[..., 2] * p[..., 0] - w[..., 0] * p[..., 2]
        s = scale[..., 0]  # [n, 1]
        jac = np.empty((n, xy.shape[1], 2, x.shape[1]))
        jac[:, :, 0, :nq], jac[:, :, 1, :nq] = dx * s[..., None], -dy * s[..., None]
        jac[:, :, 0, nq:nq + 3], jac[:, :, 1, nq:nq + 3] = rx_ * s[..., None], -ry_ * s[..., None]
        jac[..., nq + 3] = xy - x[:, None, nq + 4:nq + 6]
        jac[..., nq + 4:nq + 6] = np.eye(2)
        for c in range(self.pose_size, x.shape[1]):
            # by differences: forward ones are exact for the geometry (the markers are affine in it), central ones
            # for the curves (angles)
            central = c >= x.shape[1] - len(CURVES)
            h = (1e-4 if central else 1e-3) * (self.p_hi[c] - self.p_lo[c])
            xh = x.copy()
            xh[:, c] += h
            up = self._project(xh, jacobian=False)[0]
            if central:
                xh[:, c] -= 2 * h
                jac[..., c] = (up - self._project(xh, jacobian=False)[0]) / (2 * h)
            else:
                jac[..., c] = (up - xy) / h
        return xy, jac

    def _residuals(self, x: np.ndarray, obs: np.ndarray, w: np.ndarray, torso: np.ndarray,
                   jacobian: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Weighted keypoint residuals [P, 2M] in torso lengths and their Jacobian [P, 2M, nq + 6]. (The
        cost adds ``prior`` x the coordinates: a weak pull towards the neutral pose settles the
        coordinates the keypoints cannot see.)"""
        xy, jac = self._project(x, jacobian)
        s = (w / torso[:, None])[..., None]  # [P, M, 1]
        r = np.nan_to_num(((xy - obs) * s).reshape(len(x), -1))
        return r, None if jac is None else (jac * s[..., None]).reshape(len(x), -1, x.shape[1])

    def _cost(self, r: np.ndarray, x: np.ndarray) -> np.ndarray:
        p = x.shape[1]
        return 0.5 * ((r ** 2).sum(1) + (self.p_weight[:p] * (x - self.p_centre[:p]) ** 2).sum(1))

    def _solve(self, x: np.ndarray, obs: np.ndarray, w: np.ndarray, torso: np.ndarray,
               iterations: int) -> tuple[np.ndarray, np.ndarray]:
        """Bounded Levenberg-Marquardt on every row at once; returns the parameters and costs."""
        p = x.shape[1]
        lo, hi = self.p_lo[:p], self.p_hi[:p]
        prior, centre = self.p_weight[:p], self.p_centre[:p]
        x = np.clip(x, lo, hi)
        r, j = self._residuals(x, obs, w, torso, jacobian=True)
        cost = self._cost(r, x)
        lam = np.full(len(x), 1e-3)
        active = np.ones(len(x), dtype=bool)
        stall = np.zeros(len(x), dtype=np.int64)
        diag_idx = np.arange(p)
        for _ in range(iterations):
            rows = np.flatnonzero(active)
            if not len(rows):
                break
            jr, xr = j[rows], x[rows]
            g = np.einsum("nrp,nr->np", jr, r[rows]) + prior * (xr - centre)
            a = jr.transpose(0, 2, 1) @ jr
            a[:, diag_idx, diag_idx] += prior
            # coordinates at a bound that the gradient pushes further out stay where they are
            frozen = ((xr <= lo + 1e-12) & (g > 0)) | ((xr >= hi - 1e-12) & (g < 0))
            a[:, diag_idx, diag_idx] *= 1 + lam[rows, None]
            keep = (~frozen).astype(float)
            a *= keep[:, :, None] * keep[:, None, :]
            a[:, diag_idx, diag_idx] += frozen + 1e-12
            step = -np.linalg.solve(a, (g * keep)[..., None])[..., 0]
            xn = np.clip(xr + step, lo, hi)
            rn, _ = self._residuals(xn, obs[rows], w[rows], torso[rows])
            cn = self._cost(rn, xn)
            better = cn < cost[rows]
            gain = np.where(better, (cost[rows] - cn) / np.maximum(cost[rows], 1e-12), 0.0)
            b = rows[better]
            if len(b):
                x[b], r[b], cost[b] = xn[better], rn[better], cn[better]
                j[b] = self._residuals(x[b], obs[b], w[b], torso[b], jacobian=True)[1]
            lam[rows] = np.where(better, np.maximum(lam[rows] * 0.3, 1e-7), lam[rows] * 5)
            stall[rows] = np.where(gain < 1e-6, stall[rows] + 1, 0)
            active[rows] = (stall[rows] < 6) & (lam[rows] < 1e8)
        return x, cost

    # fitting -----------------------------------------------------------------------------------------------
    def fit_batch(self, keypoints: np.ndarray, stature_px: np.ndarray, starts: int = 4,
                  chunk: int = 64) -> BatchFit:
        """Fit annotations' [N, K, 3] keypoints (K = the model's markers, same order)."""
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, len(self.model.marker_names), 3)
        stature_px = np.asarray(stature_px, dtype=np.float64).reshape(len(kp))
        parts = [self._fit_chunk(kp[i:i + chunk], stature_px[i:i + chunk], starts)
                 for i in range(0, len(kp), chunk)]
        if not parts:
            z = np.zeros((0, self.nq))
            return BatchFit(np.zeros((0, kp.shape[1])), np.zeros((0, len(self.p_lo))), z.astype(bool), np.zeros(0), 0)
        return BatchFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("residuals", "params", "pinned",
                                                                                   "cost")),
                        iterations=self.iterations)

    def _fit_chunk(self, kp: np.ndarray, stature_px: np.ndarray, starts: int) -> BatchFit:
        n = len(kp)
        lab = (kp[..., 2] > 0) & np.isfinite(kp[..., :2]).all(axis=-1)
        obs = np.where(lab[..., None], kp[..., :2], 0.0)
        torso = np.maximum(stature_px * torso_fraction(), 1e-6)
        w = np.sqrt(lab.astype(float))
        with np.errstate(invalid="ignore"):
            centre = np.nan_to_num(np.nanmean(np.where(lab[..., None], obs, np.nan), axis=1))
        roll = self._roll(obs, lab)
        q0 = np.clip(0.0, self.lo, self.hi)
        # every annotation from each starting orientation (yaw k * 2 pi / starts), the best one kept
        x0 = np.concatenate([np.tile(q0, (n * starts, 1)), np.stack([np.zeros(n * starts), np.repeat(roll, starts),
                             np.tile(2 * np.pi * np.arange(starts) / starts, n)], 1),
                             np.repeat(np.log(np.maximum(stature_px, 1e-6)), starts)[:, None],
                             np.repeat(centre, starts, axis=0)], 1)
        rep = np.repeat(np.arange(n), starts)
        x, cost = self._solve(x0, obs[rep], w[rep], torso[rep], self.iterations)
        best = cost.reshape(n, starts).argmin(1) + np.arange(n) * starts
        x, cost = x[best], cost[best]
        x, cost = self._limbs(x, cost, obs, w, lab, torso)
        x, cost = self._builds(x, cost, obs, w, lab, torso)
        xy, _ = self._project(x, jacobian=False)
        res = np.where(lab, np.linalg.norm(xy - obs, axis=-1) / torso[:, None], np.nan)
        span = self.hi - self.lo
        q = x[:, :self.nq]
        pinned = np.minimum(q - self.lo, self.hi - q) < 0.01 * span
        return BatchFit(res, x, pinned, cost, self.iterations)

    def _limbs(self, x: np.ndarray, cost: np.ndarray, obs: np.ndarray, w: np.ndarray, lab: np.ndarray,
               torso: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Restart each limb the fit leaves off (a residual above ``LIMB_RESTART``) from a grid of its
        postures, the rest of the body as fitted; a restart is kept where the whole fit improves."""
        names = self.model.body_names
        for side in ("left", "right"):
            for limb, (bodies, grid) in LIMBS.items():
                own = [names.index(f"{side}_{b}") for b in bodies]
                markers = np.flatnonzero(np.isin(self.model.marker_body, own))
                xy, _ = self._project(x, jacobian=False)
                res = np.where(lab[:, markers], np.linalg.norm(xy[:, markers] - obs[:, markers], axis=-1), 0.0)
                off = np.flatnonzero(res.max(1) / torso > LIMB_RESTART)
                if not len(off):
                    continue
                cols, values = [], []
                for (body, axis), degrees in grid.items():
                    j = np.flatnonzero((self.body == names.index(f"{side}_{body}")) & (self.axis == axis))
                    if len(j):
                        sign = 1 if side == "left" or axis == 0 else -1  # mirrored about the sagittal plane
                        cols.append(int(j[0]))
                        values.append(np.deg2rad(np.array(degrees, dtype=float)) * sign)
                mesh = np.stack([v.ravel() for v in np.meshgrid(*values, indexing="ij")], 1)  # [G, C]
                g = len(mesh)
                xs = np.repeat(x[off], g, axis=0)
                xs[:, cols] = np.tile(mesh, (len(off), 1))
                rep = np.repeat(off, g)
                xs, cs = self._solve(xs, obs[rep], w[rep], torso[rep], self.iterations // 2)
                pick = cs.reshape(len(off), g).argmin(1) + np.arange(len(off)) * g
                keep = cs[pick] < cost[off]
                x[off[keep]], cost[off[keep]] = xs[pick[keep]], cs[pick[keep]]
        return x, cost

    def _builds(self, x: np.ndarray, cost: np.ndarray, obs: np.ndarray, w: np.ndarray, lab: np.ndarray,
                torso: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parameters with the build [N, nq + 6 + builds]: the model's body, or for an annotation it fits worse
        than ``BUILD_REFIT``, the pose refitted together with the person's build where that fits better."""
        x = np.concatenate([x, np.tile(self.b0, (len(x), 1))], 1)
        xy, _ = self._project(x, jacobian=False)
        res = np.where(lab, np.linalg.norm(xy - obs, axis=-1), 0.0).max(1) / torso
        off = np.flatnonzero(res > BUILD_REFIT) if self.builds else np.zeros(0, dtype=np.int64)
        if len(off):
            xs, cs = self._solve(x[off].copy(), obs[off], w[off], torso[off], self.iterations)
            keep = cs < cost[off]
            x[off[keep]], cost[off[keep]] = xs[keep], cs[keep]
        return x, cost

    def fit(self, keypoints: np.ndarray, stature_px: float, starts: int = 4) -> FitResult:
        """Fit one annotation's [K, 3] keypoints (K = the model's markers, same order)."""
        b = self.fit_batch(keypoints[None], np.array([stature_px]), starts)
        q, build = b.params[0, :self.nq], b.params[0, self.pose_size:]
        return FitResult(b.residuals[0], [n for n, p in zip(self.names, b.pinned[0]) if p],
                         {n: float(v) for n, v in zip(self.names, q)},
                         {n: float(v) for n, v in zip(self.build_names, build)}, float(b.cost[0]), b.iterations)

    def _roll(self, obs: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """[N] rotation about the view axis that turns the model's up into each annotation's hip->neck axis."""
        names = self.model.marker_names
        up = [names.index(n) for n in ("neck", "left_shoulder", "right_shoulder") if n in names]
        low = [names.index(n) for n in ("hip", "left_hip", "right_hip") if n in names]

        def mean(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
            m = lab[:, idx]
            return (obs[:, idx] * m[..., None]).sum(1) / np.maximum(m.sum(1), 1)[:, None], m.any(1)

        (pu, ou), (pl, ol) = mean(up), mean(low)
        u = pu - pl
        return np.where(ou & ol, np.arctan2(-u[:, 0], -u[:, 1]), 0.0)


def spine_residual(residuals: np.ndarray, chain: list[int]) -> np.ndarray:
    """[N] the largest residual along the spine chain (NaN where none of it is labelled)."""
    r = residuals[:, chain]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(r).any(1), np.nanmax(np.nan_to_num(r, nan=-np.inf), axis=1), np.nan)


def fit_persons(ds: Persons, rows: np.ndarray, fitter: PoseFitter | None = None, chunk: int = 64) -> BatchFit:
    """The deep fit of the persons at ``rows`` (batched, with progress)."""
    fitter = fitter or PoseFitter()
    rows = np.asarray(rows, dtype=np.int64)
    stature = BodyGeometry(ds).stature
    parts = [fitter.fit_batch(ds.keypoints[rows[i:i + chunk]], stature[rows[i:i + chunk]], chunk=chunk)
             for i in progress(range(0, len(rows), chunk), total=-(-len(rows) // chunk),
                               description="fitting the model (deep check)")]
    if not parts:
        return fitter.fit_batch(np.zeros((0, ds.skeleton.num_keypoints, 3)), np.zeros(0))
    return BatchFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("residuals", "params", "pinned",
                                                                               "cost")), fitter.iterations)


def unexplained(ds: Persons, rows: np.ndarray, residuals: np.ndarray, noise: float | None = None) -> np.ndarray:
    """[R, K] residuals (torso lengths) of the persons at ``rows`` beyond what the file's annotation noise
    explains: ``DEEP_NOISE_K`` x noise x sigma_k x sqrt(area) (``noise`` as the rules measure it by default)."""
    g = BodyGeometry(ds, noise)
    rows = np.asarray(rows, dtype=np.int64)
    unit = (g.noise * ds.skeleton.sigmas[None, :] * np.sqrt(np.nan_to_num(ds.areas[rows]))[:, None]
            / np.maximum(g.stature[rows] * torso_fraction(), 1e-6)[:, None])
    return residuals - DEEP_NOISE_K * unit


def deep_findings(ds: Persons, rows: np.ndarray, fitter: PoseFitter | None = None,
                  noise: float | None = None) -> list[Finding]:
    """Findings of the deep fit of the persons at ``rows``: spine residual (beyond the annotation noise,
    ``unexplained``) and pinned coordinates."""
    fitter = fitter or PoseFitter()
    fits = fit_persons(ds, rows, fitter)
    chain = ds.skeleton.spine_chain
    names = ds.skeleton.names
    spine = spine_residual(unexplained(ds, rows, fits.residuals, noise), chain)
    out = []
    for i, r in enumerate(np.asarray(rows, dtype=np.int64)):
        res = fits.residuals[i]
        aid = None if ds.ann_ids[r] == MISSING_ID else int(ds.ann_ids[r])
        iid = None if ds.image_ids[r] == MISSING_ID else int(ds.image_ids[r])
        pinned = [n for n, p in zip(fitter.names, fits.pinned[i]) if p]
        per_kp = {names[k]: round(float(v), 4) for k, v in enumerate(res) if np.isfinite(v)}
        values = {"residuals": per_kp, "pinned": pinned}
        if spine[i] > DEEP_SPINE_RESIDUAL:
            worst = [names[k] for k in chain if res[k] > DEEP_SPINE_RESIDUAL]
            out.append(Finding("biomech_deep_fit", "error", aid, iid,
                               f"no pose of the model fits the spine: residual {spine[i]:.2f} torso lengths "
                               f"(bound {DEEP_SPINE_RESIDUAL})", score=float(spine[i]), keypoints=worst,
                               values=values))
        else:
            out.append(Finding("biomech_deep_fit", "info", aid, iid,
                               f"the model fits: spine residual {spine[i]:.2f} torso lengths", score=float(spine[i]),
                               values=values))
        if pinned:
            out.append(Finding("biomech_pinned", "warning" if len(pinned) > 3 else "info", aid, iid,
                               f"{len(pinned)} coordinates at a range limit: {', '.join(pinned[:6])}",
                               score=float(len(pinned)), values={"pinned": pinned}))
    return out
