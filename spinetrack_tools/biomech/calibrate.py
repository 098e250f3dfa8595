"""Offline calibration of the 2D rules: OpenSim FK of poses inside the ranges of motion, random cameras.

Poses are sampled uniformly over every coordinate's whole range (plus standing, sitting, bending, lying
and inverted postures), marker positions come from OpenSim's forward kinematics of the shipped model,
random perspective cameras project them, and annotation noise is added. Each rule's bound is the
quantile of its value over these plausible poses at a common tail probability, chosen so that the
share of plausible annotations failing any rule is ``target_rate`` and no posture's share exceeds 1.5
times that.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..persons import Persons
from .geometry import BodyGeometry
from .model import OSIM_PATH
from .poses import pose_scene
from .rules import RULES, Features, Thresholds, excess, features

SEGMENT_TAIL_DIVISOR = 4


def plausible_sample(n_images: int, seed: int, noise: float, fk: str = "opensim") -> tuple[Persons, Features]:
    """Synthetic plausible annotations over the whole range of motion, with annotation noise
    (Gaussian, ``noise`` x torso length per coordinate), and their rule values."""
    ds = pose_scene(n_images, seed=seed, persons_per_image=(1, 3), fk=fk, spread=1.0).persons
    rng = np.random.default_rng(seed + 1)
    torso = BodyGeometry(ds).torso
    lab = ds.keypoints[..., 2] > 0
    ds.keypoints[..., :2] += np.where(lab[..., None], rng.normal(0, 1, lab.shape + (2,)) * noise * torso[:, None, None],
                                      0)
    return ds, features(ds)


def _bounds(f: Features, alpha: float) -> Thresholds:
    rules = {}
    for rule, (kind, _) in RULES.items():
        if rule == "segment_length":
            continue
        v = f.values[rule]
        v = v[np.isfinite(v)]
        if len(v):
            rules[rule] = float(np.quantile(v, 1 - alpha if kind == "upper" else alpha))
    # the 19 segment bounds act as one rule: a smaller tail each keeps their union comparable
    seg_alpha = alpha / SEGMENT_TAIL_DIVISOR
    segments = {s: float(np.nanquantile(v, 1 - seg_alpha)) for s, v in f.segments.items() if np.isfinite(v).any()}
    return Thresholds(rules, segments, {})


def _flag_rate(f: Features, t: Thresholds, postures: np.ndarray | None = None) -> float:
    """Share of annotations failing some rule; with ``postures``, the worst posture's share / 1.5 when
    that is higher (no posture, lying or inverted included, may carry the false alarms)."""
    flagged = np.sum(list(excess(f, t).values()), axis=0) > 0
    rate = float(flagged.mean())
    if postures is not None:
        rate = max(rate, max(float(flagged[postures == p].mean()) for p in set(postures)) / 1.5)
    return rate


def calibrate(n_images: int = 20000, seed: int = 0, noise: float = 0.01, target_rate: float = 0.01,
              fk: str = "opensim") -> Thresholds:
    """Thresholds such that ``target_rate`` of plausible synthetic annotations fail some rule."""
    ds, f = plausible_sample(n_images, seed, noise, fk)
    postures = ds.attrs["posture"].astype(str)
    lo, hi = 1e-5, target_rate
    for _ in range(30):  # bisection on the per-rule tail probability
        mid = (lo + hi) / 2
        if _flag_rate(f, _bounds(f, mid), postures) > target_rate:
            hi = mid
        else:
            lo = mid
    t = _bounds(f, lo)
    t.meta = {
        "generator": "spinetrack_tools.biomech.calibrate", "n_images": n_images, "annotations": len(ds),
        "seed": seed, "noise_torso_fraction": noise, "target_rate": target_rate, "tail_probability": lo,
        "flag_rate_on_calibration_set": _flag_rate(f, t), "fk": fk,
        "model_sha256": hashlib.sha256(OSIM_PATH.read_bytes()).hexdigest(),
    }
    return t


def corrupt_spines(ds: Persons, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Corrupt every annotation's spine chain in place; returns the mask of annotations it applied to."""
    chain = np.array(ds.skeleton.spine_chain)
    kp = ds.keypoints
    ok = (kp[:, chain, 2] > 0).all(axis=1)
    torso = BodyGeometry(ds).torso
    n = len(ds)
    mag = rng.uniform(0.2, 0.4, n) * torso
    ang = rng.uniform(0, 2 * np.pi, n)
    direction = np.stack([np.cos(ang), np.sin(ang)], 1)
    rows = np.arange(n)
    if kind == "order":
        i = rng.integers(0, len(chain) - 1, n)
        j = np.minimum(i + rng.integers(1, 3, n), len(chain) - 1)
        a, b = chain[i], chain[j]
        pa, pb = kp[rows, a, :2].copy(), kp[rows, b, :2].copy()
        kp[rows, a, :2], kp[rows, b, :2] = pb, pa
    elif kind == "bend":
        i = chain[rng.integers(1, len(chain) - 1, n)]
        seg = kp[rows, chain[-1], :2] - kp[rows, chain[0], :2]
        perp = np.stack([-seg[:, 1], seg[:, 0]], 1) / np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-9)
        kp[rows, i, :2] += perp * (mag * rng.choice([-1, 1], n))[:, None]
    elif kind == "displace":
        kp[:, chain, :2] += (direction * mag[:, None])[:, None]
    return ok
