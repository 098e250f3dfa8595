"""Offline calibration of the 2D rules over a population: poses inside the OpenSim model's ranges of motion,
people of every build, annotators of every habit and noise level, random cameras.

Poses are sampled uniformly over every coordinate's whole range (plus standing, sitting, bending, lying and
inverted postures) of the shipped OpenSim model; each person gets ANSUR II proportions and an annotator's
placement habits (``population``), the kinematic tree exported from OpenSim poses them, random perspective cameras
project them. The exact points give each rule's bound for exact annotations (a tail quantile); copies with
annotation noise (``noise`` x sigma_k x sqrt(area), for each level in ``NOISE_LEVELS``) give its widening per unit
of the noise that ``geometry.noise_level`` measures on them. One tail probability for all rules is chosen so
that at every noise level at most ``target_rate`` of the plausible annotations fail some rule and no posture more
than 1.5 times that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..persons import Persons
from .geometry import BodyGeometry
from .model import OSIM_PATH
from .poses import pose_scene
from .rules import RULES, Features, Thresholds, excess, features

SEGMENT_TAIL_DIVISOR = 4


def plausible_sample(n_images: int, seed: int, noise: float, population: bool = True) -> tuple[Persons, Features]:
    """Synthetic plausible annotations over the whole range of motion (people of every proportion, annotators
    of every habit, with ``population``), with annotation noise, and their rule values.

    Noise: Gaussian per coordinate with ``noise`` x sigma_k x sqrt(area) for keypoint k, the SpineTrack OKS
    sigmas being the annotators' per-keypoint spread (``noise`` = 1 is that whole spread).
    """
    ds = pose_scene(n_images, seed=seed, persons_per_image=(1, 3), fk="numpy", spread=1.0,
                    population=population).persons
    add_noise(ds, noise, np.random.default_rng(seed + 1))
    return ds, features(ds)


def add_noise(persons: Persons, noise: float, rng: np.random.Generator) -> None:
    """Annotation noise in place: per coordinate N(0, (noise x sigma_k x sqrt(area))^2) on labelled points."""
    lab = persons.keypoints[..., 2] > 0
    scale = noise * persons.skeleton.sigmas[None, :] * np.sqrt(np.nan_to_num(persons.areas))[:, None]
    persons.keypoints[..., :2] += np.where(lab[..., None], rng.normal(0, 1, lab.shape + (2,)) * scale[..., None], 0)


NOISE_LEVELS = (0.1, 0.2, 0.35, 0.5, 0.75)  # x sigma_k x sqrt(area): from careful to the annotators' whole spread


PER_NOISE_GRID = np.linspace(0, 12, 97)


@dataclass
class _Tail:
    """One rule's values on one calibration set, as an upper-bound problem (v - k * w), reduced to the
    candidates for its top ``keep`` at any widening k of the grid (the rest can never set a tail quantile)."""

    v: np.ndarray
    w: np.ndarray
    n: int  # the set's size before the reduction
    noise: float
    median_w: float

    @classmethod
    def of(cls, v: np.ndarray, w: np.ndarray, noise: float, keep: int) -> "_Tail":
        ok = np.isfinite(v) & np.isfinite(w)
        v, w = v[ok], w[ok]
        median_w = float(np.median(w)) if len(w) else 0.0
        if len(v) > 4 * keep:
            idx = np.unique(np.concatenate([np.argpartition(-(v - k * w), keep)[:keep]
                                            for k in PER_NOISE_GRID[::2]]))
            return cls(v[idx], w[idx], int(ok.sum()), noise, median_w)
        return cls(v, w, int(ok.sum()), noise, median_w)

    def quantile(self, k: float, q: float) -> float:
        """``np.quantile(v - k * w, q)`` over the whole set (q in its upper tail)."""
        if not self.n:
            return -np.inf
        pos = (self.n - 1) * q
        lower = int(np.floor(pos))
        r = self.n - 1 - lower  # the lower neighbour's rank from the top
        x = -(self.v - k * self.w)
        top = -np.partition(x, [max(r - 1, 0), r])[[max(r - 1, 0), r]] if r < len(x) else None
        if top is None:
            return float(np.quantile(self.v - k * self.w, q))  # not reduced: the plain quantile
        frac = pos - lower
        return float(top[1] * (1 - frac) + (top[0] if r > 0 else top[1]) * frac)


def _tails(sets: list[Features], max_tail: float) -> dict[str, list[_Tail]]:
    """Every rule's and segment's ``_Tail`` on every set, signed as upper bounds."""
    keep = int(np.ceil(max_tail * max(len(f.worst_spine_point) for f in sets) * 2)) + 10
    out = {}
    for name in [r for r in RULES if r != "segment_length"] + list(sets[0].segments):
        sign = -1.0 if RULES.get(name, ("upper",))[0] == "lower" else 1.0
        out[name] = [_Tail.of(sign * (f.segments[name] if name in f.segments else f.values[name]),
                              f.noise * f.units[name], f.noise, keep) for f in sets]
    return out


def _bounds(tails: dict[str, list[_Tail]], alpha: float) -> Thresholds:
    """Bounds at tail probability ``alpha`` on every set: the exact part and the widening per unit of noise at
    the noise-free set and the lightest noise (tightest on both), then at each noisier set the least widening
    that holds its tail (interpolated between the measured noise levels)."""

    def fit(name: str, tail: float) -> dict[str, Any] | None:
        sets = tails[name]
        if not sets[0].n:
            return None

        def need(k: float, j: int) -> float:  # the exact part set j needs with this widening
            return sets[j].quantile(k, 1 - tail)

        def looseness(k: float) -> float:
            return float(np.mean([max(need(k, 0), need(k, 1)) + k * sets[j].median_w for j in (0, 1)]))

        coarse = PER_NOISE_GRID[::8]
        k0 = float(coarse[int(np.argmin([looseness(k) for k in coarse]))])
        fine = PER_NOISE_GRID[np.abs(PER_NOISE_GRID - k0) <= PER_NOISE_GRID[8]]
        k0 = float(fine[int(np.argmin([looseness(k) for k in fine]))])
        exact = max(need(k0, 0), need(k0, 1))
        table = [[sets[0].noise, k0], [sets[1].noise, k0]]
        for j in range(2, len(sets)):  # need(k, j) falls as k grows: the least k that fits, by bisection
            lo, hi = 0, len(PER_NOISE_GRID) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if need(float(PER_NOISE_GRID[mid]), j) <= exact else (mid + 1, hi)
            table.append([sets[j].noise, float(PER_NOISE_GRID[lo])])
        sign = -1.0 if RULES.get(name, ("upper",))[0] == "lower" else 1.0
        return {"exact": sign * exact, "per_noise": [[round(c, 4), k] for c, k in table]}

    rules = {r: fit(r, alpha) for r in RULES if r != "segment_length" and r in tails}
    # the 19 segment bounds act as one rule: a smaller tail each keeps their union comparable
    segs = {s: fit(s, alpha / SEGMENT_TAIL_DIVISOR) for s in tails if s not in RULES}
    return Thresholds({k: v for k, v in rules.items() if v}, {k: v for k, v in segs.items() if v}, {})


def _flag_rate(sets: list[Features], t: Thresholds, postures: np.ndarray | None = None) -> float:
    """The largest share of annotations failing some rule over the sets; with ``postures``, the worst posture's
    share / 1.5 when that is higher (no posture, lying or inverted included, may carry the false alarms)."""
    rate = 0.0
    for f in sets:
        flagged = np.sum(list(excess(f, t).values()), axis=0) > 0
        rate = max(rate, float(flagged.mean()))
        if postures is not None:
            rate = max(rate, max(float(flagged[postures == p].mean()) for p in set(postures)) / 1.5)
    return rate


def calibrate(n_images: int = 20000, seed: int = 0, noise_levels: tuple[float, ...] = NOISE_LEVELS,
              target_rate: float = 0.01) -> Thresholds:
    """Thresholds such that at most ``target_rate`` of plausible synthetic annotations fail some rule, at every
    noise level."""
    ds, f0 = plausible_sample(n_images, seed, 0.0)
    sets = [f0]
    for i, c in enumerate(noise_levels):
        noisy = ds.select(np.arange(len(ds)))
        add_noise(noisy, c, np.random.default_rng([seed, 2, i]))
        sets.append(features(noisy))
    postures = ds.attrs["posture"].astype(str)
    tails = _tails(sets, target_rate)
    lo, hi = 1e-5, target_rate
    for _ in range(14):  # bisection on the per-rule tail probability (in log scale)
        mid = float(np.sqrt(lo * hi))
        if _flag_rate(sets, _bounds(tails, mid), postures) > target_rate:
            hi = mid
        else:
            lo = mid
    t = _bounds(tails, lo)
    t.meta = {
        "generator": "spinetrack_tools.biomech.calibrate", "n_images": n_images, "annotations": len(ds),
        "seed": seed, "noise_levels": list(noise_levels),
        "measured_noise": [round(f.noise, 4) for f in sets], "target_rate": target_rate, "tail_probability": lo,
        "flag_rate_on_calibration_set": _flag_rate(sets, t), "population": "ANSUR II proportions, annotator habits",
        "kinematics": "the OpenSim model's exported tree (numpy forward kinematics, equal to OpenSim's)",
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
