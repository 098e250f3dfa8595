"""Fast 2D plausibility rules (``spinetrack validate-biomech``), thresholds calibrated with OpenSim.

Each rule turns an annotation into one number; ``opensim_models/thresholds.json`` (written by
``spinetrack biomech calibrate``) bounds it. Lengths are normalised by the chain's own chord or by a
torso length from the body-scale estimate (foreshortening only shortens segments, so segment rules
are upper bounds). Every bound has two parts: what people of every build and annotators of every habit
need with exact points, plus a tolerance in units of the annotation noise (the file's noise level, measured
by ``geometry.noise_level``, times the SpineTrack sigmas of the rule's keypoints times sqrt(area)), so noisier
annotators widen the bounds and careful ones keep them tight. No OpenSim is needed here; everything is
vectorised over annotations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..findings import Finding, Report, findings_from_mask
from ..persons import Persons
from .geometry import (BOUNDED_SEGMENTS, CROSSINGS, TORSO_PAIRS, BodyGeometry, point_segment_distance, quiet,
                       reference_length)
from .model import THRESHOLDS_PATH

_CROSSINGS = tuple((p, c) for p, c, natural in CROSSINGS if not natural)  # crossing forearms/shins is natural

# rule -> ("upper" | "lower", keypoints it concerns ("spine" = the chain))
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "spine_order": ("upper", ("spine",)),
    "spine_curvature": ("upper", ("spine",)),
    "spine_lateral": ("upper", ("spine",)),
    "spine_attachment": ("upper", ("hip", "neck", "left_hip", "right_hip", "left_shoulder", "right_shoulder")),
    "spine_off_torso": ("upper", ("spine",)),
    "head_attachment": ("upper", ("neck_03", "left_ear", "right_ear")),
    "segment_length": ("upper", ()),
    "lr_torso": ("upper", tuple(f"{s}_{p}" for p in TORSO_PAIRS for s in ("left", "right"))),
    "lr_crossing": ("lower", tuple(f"{s}_{p}" for c in _CROSSINGS for p in c for s in ("left", "right"))),
}


def _seg_name(a: str, b: str) -> str:
    return f"{a}-{b}"


@dataclass
class Features:
    """Per-annotation rule values ([N] arrays, NaN where a rule cannot be judged) and segment ratios, with the
    annotation-noise unit of each (its keypoints' sigmas x sqrt(area), in the value's own units)."""

    values: dict[str, np.ndarray]
    segments: dict[str, np.ndarray]  # segment name -> [N] length / (reference x body scale)
    units: dict[str, np.ndarray]  # rule or segment name -> [N]
    noise: float  # the file's annotation noise level (x sigma)
    worst_spine_point: np.ndarray  # [N] index into the chain of the worst point of the order/curvature rules


def _rule_sigma(persons: Persons, rule: str) -> float:
    """Root mean square of the sigmas of a rule's keypoints."""
    sk = persons.skeleton
    kps = RULES[rule][1]
    idx = list(sk.spine_chain) if kps == ("spine",) else sk.indices(kps)
    return float(np.sqrt(np.mean(sk.sigmas[idx] ** 2))) if idx else 0.0


def features(persons: Persons, noise: float | None = None) -> Features:
    """Compute every rule's value for every person (vectorised). ``noise``: the annotation noise level
    (default: measured on these persons)."""
    g = BodyGeometry(persons, noise)
    n = len(persons)
    nan = np.full(n, np.nan)
    vals: dict[str, np.ndarray] = {k: nan.copy() for k in RULES}
    worst = np.zeros(n, dtype=np.int64)
    chain = g.sk.spine_chain
    with quiet():
        if len(chain) >= 4:
            xy, ok = g.xy[:, chain], g.usable[:, chain]
            enough = ok.sum(1) >= 4
            pts, valid, cnt, order = _compact(xy, ok)
            rows = np.arange(n)
            first, last = pts[:, 0], pts[rows, np.maximum(cnt - 1, 0)]
            chord = last - first
            clen = np.linalg.norm(chord, axis=1)
            u = chord / clen[:, None]
            perp = np.stack([-u[:, 1], u[:, 0]], 1)
            across = np.einsum("nkd,nd->nk", pts - first[:, None], perp) / g.torso[:, None]  # torso lengths:
            judge = enough & (clen > 0.25 * g.torso)  # a chain seen end-on has a short chord
            order_rel, order_unit = spine_order(g)
            vals["spine_order"] = np.where(judge, order_rel, np.nan)
            vals["spine_lateral"] = np.where(judge, np.nanmax(np.where(valid, np.abs(across), np.nan), axis=1), np.nan)
            sd = across[:, 2:] - 2 * across[:, 1:-1] + across[:, :-2]
            sd = np.where(valid[:, 2:], np.abs(sd), np.nan)
            vals["spine_curvature"] = np.where(judge, np.nanmax(sd, axis=1), np.nan)
            worst_sorted = np.where(np.isfinite(sd).any(1), np.nanargmax(np.nan_to_num(sd, nan=-1), axis=1) + 1, 0)
            worst = np.take_along_axis(order, worst_sorted[:, None], axis=1)[:, 0]
            mh, oh = g.point("mid_hip")
            ms, os_ = g.point("mid_shoulder")
            if oh is not None and os_ is not None and g.sk.has("hip", "neck"):
                torso_ok = oh & os_
                hip_p, hip_ok = g.point("hip")
                neck_p, neck_ok = g.point("neck")
                d_hip = np.where(hip_ok & torso_ok, np.linalg.norm(hip_p - mh, axis=1), np.nan)
                d_neck = np.where(neck_ok & torso_ok, np.linalg.norm(neck_p - ms, axis=1), np.nan)
                vals["spine_attachment"] = np.fmax(d_hip, d_neck) / g.torso
                interior = np.where(ok & torso_ok[:, None], point_segment_distance(xy, mh, ms), np.nan)
                vals["spine_off_torso"] = np.nanmax(interior, axis=1) / g.torso
        c1, oc1 = g.point("neck_03")
        me, oe = g.point("mid_ear")
        if oc1 is not None and oe is not None:
            vals["head_attachment"] = np.where(oc1 & oe, np.linalg.norm(c1 - me, axis=1) / g.torso, np.nan)

        segs, units = {}, {r: g.scale * _rule_sigma(persons, r) / g.torso for r in RULES if r != "segment_length"}
        if len(chain) >= 4:  # the order step is a fraction of the gap expected at its point
            units["spine_order"] = order_unit
        sig = dict(zip(persons.skeleton.names, persons.skeleton.sigmas))
        for a, b in BOUNDED_SEGMENTS:
            (pa, oa), (pb, ob) = g.point(a), g.point(b)
            if oa is None or ob is None:
                continue
            ref = reference_length(a, b) * g.stature
            segs[_seg_name(a, b)] = np.where(oa & ob, np.linalg.norm(pa - pb, axis=1) / ref, np.nan)
            units[_seg_name(a, b)] = g.scale * np.hypot(sig[a], sig[b]) / ref
        vals["lr_torso"], vals["lr_crossing"] = _left_right(g)
    return Features(vals, segs, units, g.noise, worst)


def _compact(xy: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labelled points moved to the front of each row in chain order: points, valid mask, count, order."""
    order = np.argsort(~ok, axis=1, kind="stable")
    pts = np.take_along_axis(xy, order[..., None], axis=1)
    cnt = ok.sum(1)
    return pts, np.arange(xy.shape[1])[None] < cnt[:, None], cnt, order


def spine_order(g: BodyGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Evidence that two points of the chain (extended by the head top: C1 lies between C3/C4 and the head)
    are out of order, and its noise unit (1: the evidence is in units of sigma x sqrt(area)); NaN where fewer
    than four points are labelled. See ``_swap_evidence``."""
    ext = g.sk.spine_chain + g.sk.indices(["head"])
    pts, valid, _, order = _compact(g.xy[:, ext], g.usable[:, ext])
    # each level's place along the chain in the model's rest pose
    names = [g.sk.names[i] for i in ext]
    arc = np.r_[0.0, np.cumsum([reference_length(a, b) for a, b in zip(names[:-1], names[1:])])]
    evidence = _swap_evidence(pts, valid, arc[order], g.sk.sigmas[ext][order], g.scale)
    return np.where(valid.sum(axis=1) >= 4, evidence, np.nan), np.ones(len(pts))


def _misfit(pts: np.ndarray, valid: np.ndarray, arc: np.ndarray, sigmas: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """[N] how far each interior chain point lies from where its two neighbours put it (interpolated at its
    place along the chain), squared and summed, in units of (sigma x sqrt(area))^2 of the three points."""
    t = (arc[:, 1:-1] - arc[:, :-2]) / (arc[:, 2:] - arc[:, :-2])
    pred = (1 - t)[..., None] * pts[:, :-2] + t[..., None] * pts[:, 2:]
    var = sigmas[:, 1:-1] ** 2 + (1 - t) ** 2 * sigmas[:, :-2] ** 2 + t ** 2 * sigmas[:, 2:] ** 2
    d2 = ((pts[:, 1:-1] - pred) ** 2).sum(axis=2) / (var * scale[:, None] ** 2)
    return np.where(valid[:, 2:], d2, 0.0).sum(axis=1)


def _swap_evidence(pts: np.ndarray, valid: np.ndarray, arc: np.ndarray, sigmas: np.ndarray,
                   scale: np.ndarray) -> np.ndarray:
    """A likelihood-ratio test for points out of order: how much smoother the chain becomes when two of its
    points (neighbours, or one apart) trade places, sqrt of the drop in ``_misfit`` (0 when no exchange helps).
    A real spine is smooth, so exchanging any two of its points only makes it rougher; two points labelled the
    wrong way round make a zigzag that the exchange straightens. It weighs close-set neck points as much as the
    wide thoracic ones, and a chain seen end-on (points close together) gives little evidence either way.
    ``pts`` [N, L, 2] with the ``valid`` ones first, in chain order, ``arc`` [N, L] their places along it."""
    with np.errstate(invalid="ignore", divide="ignore"):
        base = _misfit(pts, valid, arc, sigmas, scale)
        best = base.copy()
        for k in (1, 2):
            for i in range(pts.shape[1] - k):
                j = i + k
                swapped = pts.copy()
                swapped[:, [i, j]] = pts[:, [j, i]]
                sig = sigmas.copy()
                sig[:, [i, j]] = sigmas[:, [j, i]]
                both = valid[:, j]
                best = np.where(both, np.fmin(best, _misfit(swapped, valid, arc, sig, scale)), best)
    return np.sqrt(np.clip(base - best, 0, None))


def _left_right(g: BodyGeometry) -> tuple[np.ndarray, np.ndarray]:
    """How strongly one torso pair contradicts the others' left-right orientation, and the smallest
    swapped/current cost ratio of the limb crossings (low = the swapped labelling fits much better)."""
    n = len(g.persons)
    contra = np.full(n, np.nan)
    signed = g.signed_widths()
    if len(signed) >= 3:
        mat = np.stack(list(signed.values()), 1)
        total = np.nansum(mat, axis=1, keepdims=True)
        others = total - np.nan_to_num(mat)
        # a pair's signed width against the sign of the sum of the other pairs
        contra = np.nanmax(np.where(np.isfinite(mat), -mat * np.sign(others), np.nan), axis=1)
        contra = np.where(np.isfinite(mat).sum(1) >= 3, contra, np.nan)
    ratio = np.full(n, np.nan)
    for parent, child in _CROSSINGS:
        costs = g.crossing_costs(parent, child)
        if costs is None:
            continue
        cur, swp, ok = costs
        spread = (cur - swp) > 0.2 * g.torso  # only judged where swapping changes something
        ratio = np.fmin(ratio, np.where(ok & spread, swp / cur, np.nan))
    return contra, ratio


@dataclass
class Thresholds:
    """Calibrated bounds: each rule and each bounded segment has ``{"exact": b, "per_noise": [[noise, k], ...]}``:
    the bound for exact points and its widening, k x noise x the rule's noise unit, with k interpolated between
    the calibrated noise levels."""

    rules: dict[str, dict[str, Any]]
    segments: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: Path = THRESHOLDS_PATH) -> "Thresholds":
        data = json.loads(Path(path).read_text())
        bounds = list(data["rules"].values()) + list(data["segments"].values())
        if not all(isinstance(b, dict) and {"exact", "per_noise"} <= set(b) for b in bounds):
            raise ValueError("expected {exact, per_noise} bounds (re-run `spinetrack biomech calibrate`)")
        return cls(data["rules"], data["segments"], data.get("meta", {}))

    def to_json(self) -> dict[str, Any]:
        return {"rules": self.rules, "segments": self.segments, "meta": self.meta}

    def bound(self, name: str, f: Features) -> np.ndarray:
        """[N] bound of a rule or segment for each annotation at the file's noise level."""
        return self.bound_for(name, f.noise, f.units[name])

    def bound_for(self, name: str, noise: float, unit: np.ndarray) -> np.ndarray:
        """The bound of a rule or segment at a noise level, for annotations with these noise units."""
        b = self.rules[name] if name in self.rules else self.segments[name]
        levels, k = np.array(b["per_noise"], dtype=float).T
        noise = max(noise, float(levels[0]))  # never tighter than for the exact calibration set
        sign = -1.0 if RULES.get(name, ("upper",))[0] == "lower" else 1.0
        return b["exact"] + sign * float(np.interp(noise, levels, k)) * noise * unit


def excess(f: Features, t: Thresholds) -> dict[str, np.ndarray]:
    """Per rule, how far each annotation is beyond its bound (relative; 0 = within; NaN-safe)."""
    out = {}
    for rule, (kind, _) in RULES.items():
        if rule == "segment_length" or rule not in t.rules:
            continue
        v, b = f.values[rule], t.bound(rule, f)
        with np.errstate(invalid="ignore", divide="ignore"):
            e = (v - b) / abs(b) if kind == "upper" else (b - v) / abs(b)
        out[rule] = np.nan_to_num(np.maximum(e, 0), nan=0.0)
    seg = [np.nan_to_num(np.maximum(f.segments[s] / t.bound(s, f) - 1, 0), nan=0.0)
           for s in f.segments if s in t.segments]
    out["segment_length"] = np.max(seg, axis=0) if seg else np.zeros(len(f.worst_spine_point))
    return out


def plausibility(persons: Persons, thresholds: Thresholds | None = None, noise: float | None = None) -> np.ndarray:
    """[N] score in (0, 1]: 1 when every rule holds, falling with the total excess over the bounds."""
    t = thresholds or Thresholds.load()
    ex = excess(features(persons, noise), t)
    return np.exp(-np.sum(list(ex.values()), axis=0))


def check(ds: Persons, thresholds: Thresholds | None = None, noise: float | None = None) -> Report:
    """One finding per violated rule and annotation, each carrying the annotation's plausibility.
    ``noise``: the annotation noise level to allow for (default: measured on ``ds``)."""
    t = thresholds or Thresholds.load()
    f = features(ds, noise)
    ex = excess(f, t)
    plaus = np.exp(-np.sum(list(ex.values()), axis=0))
    report = Report(ds.source, stats={"images": len(ds.images), "annotations": len(ds),
                                      "implausible_annotations": int((plaus < 1).sum()),
                                      "annotation_noise": round(f.noise, 3)})
    chain = [ds.skeleton.names[i] for i in ds.skeleton.spine_chain]
    for rule, (kind, kps) in RULES.items():
        bad = ex[rule] > 0
        if not bad.any():
            continue
        if rule == "segment_length":
            report.extend(_segment_findings(ds, f, t, bad, plaus))
            continue
        names = chain if kps == ("spine",) else [k for k in kps if k in ds.skeleton.names]
        v, b = f.values[rule], t.bound(rule, f)
        report.extend(findings_from_mask(
            f"biomech_{rule}", "error", bad, ds.ann_ids, ds.image_ids,
            lambda r, rule=rule, v=v, b=b, kind=kind: f"{rule.replace('_', ' ')} {v[r]:.3f} "
                                                      f"{'above' if kind == 'upper' else 'below'} the bound {b[r]:.3f}",
            scores=plaus, keypoints=names, values={"value": v, "bound": b, "plausibility": plaus}))
    return report


def _segment_findings(ds: Persons, f: Features, t: Thresholds, bad: np.ndarray,
                      plaus: np.ndarray) -> list[Finding]:
    names = [s for s in f.segments if s in t.segments]
    mat = np.stack([f.segments[s] / t.bound(s, f) for s in names], 1)
    worst = np.nanargmax(np.nan_to_num(mat, nan=-1), axis=1)
    return findings_from_mask(
        "biomech_segment_length", "error", bad, ds.ann_ids, ds.image_ids,
        lambda r: f"segment {names[worst[r]]} is {mat[r, worst[r]]:.2f}x its longest plausible 2D length",
        scores=plaus, keypoints=lambda r: names[worst[r]].split("-"),
        values={"ratio_to_bound": np.nanmax(np.nan_to_num(mat, nan=0), axis=1), "plausibility": plaus})
