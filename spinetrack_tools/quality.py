"""Detectors of corrupted keypoint labels (``spinetrack flag``), vectorised over annotations.

Geometry is normalised by a per-person body scale: each rigid segment's 2D length divided by its
reference length (fraction of stature, from the kinematic model's rest pose). Foreshortening only
shortens, so a high order statistic of these ratios estimates stature in pixels and is robust to one
corrupted limb. Where a fixed threshold would not do, thresholds adapt to the file (median + k * MAD of
the feature over the file, never below a floor set on plausible synthetic poses, including lying and
inverted people).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .biomech.geometry import (CROSSINGS, LIMB_OF, SCALE_SEGMENTS, BodyGeometry, person_noise, point_segment_distance,
                               quiet, reference_length)
from .biomech.rules import Thresholds as BiomechThresholds
from .biomech.rules import spine_order
from .evaluate import oks
from .findings import Finding, Report, findings_from_mask, findings_per_keypoint
from .persons import Persons


@dataclass(frozen=True)
class Thresholds:
    """Floors of the adaptive thresholds (normalised units), set on plausible synthetic poses."""

    outside_image_error: float = 0.10  # fraction of the image size
    outside_box_warning: float = 0.05  # fraction of the box size
    outside_box_error: float = 0.25
    collapse_radius: float = 0.01  # fraction of the box diagonal
    collapse_min_points: int = 5
    collapse_min_fraction: float = 0.4
    duplicate_oks: float = 0.95
    spine_min_chord: float = 0.25  # chord / torso below which the view is too foreshortened to judge order
    spine_detached: float = 0.45  # torso lengths from the hip-shoulder midline
    crossing_ratio: float = 0.85  # swapped cost / current cost
    crossing_gain: float = 0.2  # torso lengths saved by swapping
    crossing_ratio_natural: float = 0.5  # the same where crossing is a natural pose
    crossing_gain_natural: float = 0.5
    chirality: float = 0.25  # |signed width| / torso for both pairs of a disagreement
    limb_scale: float = 1.7  # segment length / (reference x body scale)
    skeleton_scale_high: float = 1.5  # keypoint extent / box extent
    skeleton_scale_low: float = 0.45
    noise: float = 0.6  # a person's annotation noise, x sigma_k x sqrt(area) (geometry.person_noise), and
    noise_ratio: float = 3.0  # that many times the file's (plausible persons stay under 3x at any noise level)
    mad_k: float = 8.0  # adaptive part: median + k * MAD over the file


@lru_cache(maxsize=1)
def order_bounds() -> BiomechThresholds:
    """The calibrated bounds of validate-biomech (flag's order test is its ``spine_order`` rule)."""
    return BiomechThresholds.load()


def adaptive(values: np.ndarray, floor: float, k: float) -> float:
    """The file's median + k * MAD of the finite ``values``, but never stricter than ``floor``."""
    v = values[np.isfinite(values)]
    if len(v) < 20:
        return floor
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return max(med + k * mad, floor)


def flag(persons: Persons, thresholds: Thresholds = Thresholds(), noise: float | None = None) -> Report:
    """Run every detector on labelled persons and return one report. ``noise``: the annotation noise level to
    allow for (x sigma_k x sqrt(area); default: measured on ``persons``)."""
    g = BodyGeometry(persons, noise)
    report = Report(persons.source, stats={"images": len(persons.images), "annotations": len(persons),
                                           "annotation_noise": round(g.noise, 3)})
    for det in DETECTORS:
        report.extend(det(g, thresholds))
    return report


def _per_point(check: str, severity: str, g: BodyGeometry, mask: np.ndarray, what: str,
               score: np.ndarray | None = None) -> list[Finding]:
    return findings_per_keypoint(check, severity, mask, g.persons.ann_ids, g.persons.image_ids, g.sk.names, what, score)


def zero_visible(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    return _per_point("zero_visible", "error", g, g.zero, "labelled keypoints at (0, 0)")


def outside(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    """Labelled points far outside the image, or outside their own box."""
    w, h = g.persons.image_size()
    x, y = g.xy[..., 0], g.xy[..., 1]
    with np.errstate(invalid="ignore"):
        dx = np.maximum(np.maximum(-x, x - w[:, None]), 0) / w[:, None]
        dy = np.maximum(np.maximum(-y, y - h[:, None]), 0) / h[:, None]
        img_out = np.maximum(dx, dy)
        far = g.usable & (img_out > t.outside_image_error)
        near = g.usable & ~far & (img_out > 0.002)
        b = g.persons.boxes
        bx = np.maximum(np.maximum(b[:, None, 0] - x, x - (b[:, None, 0] + b[:, None, 2])), 0) / b[:, None, 2]
        by = np.maximum(np.maximum(b[:, None, 1] - y, y - (b[:, None, 1] + b[:, None, 3])), 0) / b[:, None, 3]
        box_out = np.where(g.usable & ~far, np.maximum(bx, by), 0)
    out = _per_point("outside_image", "error", g, far, "labelled keypoints far outside the image",
                     score=np.nanmax(np.where(far, img_out, 0), axis=1))
    out += _per_point("outside_image", "warning", g, near, "labelled keypoints just outside the image",
                      score=np.nanmax(np.where(near, img_out, 0), axis=1))
    box_err = box_out > t.outside_box_error
    box_warn = (box_out > t.outside_box_warning) & ~box_err
    out += _per_point("outside_box", "error", g, box_err, "labelled keypoints far outside their box",
                      score=box_out.max(axis=1))
    out += _per_point("outside_box", "warning", g, box_warn & ~box_err.any(1, keepdims=True),
                      "labelled keypoints outside their box", score=box_out.max(axis=1))
    return out


def collapsed(g: BodyGeometry, t: Thresholds, chunk: int = 4096) -> list[Finding]:
    """Many distinct joints labelled on one spot (pairwise distances in float32, in chunks)."""
    n, m = len(g.persons), t.collapse_min_points
    eps2 = ((t.collapse_radius * g.box_diag + 0.5) ** 2).astype(np.float32)
    xy_all = np.where(g.usable[..., None], g.xy, np.nan).astype(np.float32)  # NaN never compares near
    biggest = np.zeros(n, dtype=np.int64)
    members = np.zeros(g.usable.shape, dtype=bool)
    for s in range(0, n, chunk):
        xy = xy_all[s:s + chunk]
        dx = xy[:, :, None, 0] - xy[:, None, :, 0]
        dy = xy[:, :, None, 1] - xy[:, None, :, 1]
        near = (dx * dx + dy * dy) <= eps2[s:s + chunk, None, None]
        cnt = near.sum(axis=2, dtype=np.uint8)
        centre = cnt.argmax(axis=1)
        rows = np.arange(len(xy))
        biggest[s:s + chunk] = cnt[rows, centre]
        members[s:s + chunk] = near[rows, centre]
    bad = (biggest >= m) & (biggest >= t.collapse_min_fraction * g.n_usable)
    return _per_point("collapsed", "error", g, members & bad[:, None], "keypoints collapsed onto one spot",
                      score=biggest / np.maximum(g.n_usable, 1))


def duplicates(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    """Two annotations of one person in the same image (OKS above the threshold)."""
    ds = g.persons
    order = np.argsort(ds.image_ids, kind="stable")
    img = ds.image_ids[order]
    out = []
    flagged = np.zeros(len(ds), dtype=bool)
    partner = np.full(len(ds), -1)
    best = np.zeros(len(ds))
    area = np.where(np.isfinite(ds.areas) & (ds.areas > 0), ds.areas, ds.boxes[:, 2] * ds.boxes[:, 3])
    kp = np.where(g.lab[..., None], ds.keypoints, 0.0)
    for d in range(1, len(ds)):
        same = img[d:] == img[:-d]
        if not same.any():
            break
        a, b = order[:-d][same], order[d:][same]  # a before b in file order within an image
        first, second = np.minimum(a, b), np.maximum(a, b)
        sim = np.fmin(oks(kp[first], kp[second], area[first], ds.skeleton.sigmas),
                      oks(kp[second], kp[first], area[second], ds.skeleton.sigmas))
        hit = sim > t.duplicate_oks
        for f, s, v in zip(first[hit], second[hit], sim[hit]):
            if v > best[s]:
                flagged[s], partner[s], best[s] = True, f, v
    out += findings_from_mask("duplicate", "error", flagged, ds.ann_ids, ds.image_ids,
                              lambda r: f"duplicate of annotation {ds.ann_ids[partner[r]]} (OKS {best[r]:.3f})",
                              scores=best, values={"duplicate_of": np.where(partner >= 0, ds.ann_ids[partner], -1)})
    return out


def spine(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    """Spine chain out of order along its chord, or detached from the hip-shoulder midline."""
    chain = g.sk.spine_chain
    if len(chain) < 4:
        return []
    xy = g.xy[:, chain]
    ok = g.usable[:, chain]
    n = len(g.persons)
    # order: the biomechanical rule's test with its calibrated bound at the file's noise level
    ok = g.usable[:, chain]
    first = ok.argmax(axis=1)
    last = ok.shape[1] - 1 - ok[:, ::-1].argmax(axis=1)
    rows = np.arange(n)
    chord_len = np.linalg.norm(xy[rows, last] - xy[rows, first], axis=1)
    order, unit = spine_order(g)
    bound = order_bounds().bound_for("spine_order", g.noise, unit)
    judge = (ok.sum(1) >= 4) & (chord_len > t.spine_min_chord * g.torso)
    order_bad = judge & (order > bound)
    names = [g.sk.names[i] for i in chain]
    out = findings_from_mask(
        "spine_order", "error", order_bad, g.persons.ann_ids, g.persons.image_ids,
        lambda r: f"spine chain out of order (evidence {order[r]:.2f}, above the bound {bound[r]:.2f} at the "
                  f"file's annotation noise {g.noise:.2f})", scores=np.nan_to_num(order), keypoints=names)

    # detachment: the chain's ends (sacrum, C7) away from the mid-hip / mid-shoulder points, or its
    # points away from the mid-hip -> mid-shoulder segment, in torso lengths
    mh, oh = g.point("mid_hip")
    ms, os_ = g.point("mid_shoulder")
    if oh is None or os_ is None or not g.sk.has("hip", "neck"):
        return out
    with quiet():
        dist = np.where(ok, point_segment_distance(xy, mh, ms) / g.torso[:, None], np.nan)
        along = np.nanmedian(np.where(ok.sum(1, keepdims=True) >= 3, dist, np.nan), axis=1)
        hip_d = np.where(g.usable[:, g.sk.index("hip")], np.linalg.norm(g.point("hip")[0] - mh, axis=1), np.nan)
        neck_d = np.where(g.usable[:, g.sk.index("neck")], np.linalg.norm(g.point("neck")[0] - ms, axis=1), np.nan)
        ends = np.nanmean(np.stack([hip_d, neck_d], 1), axis=1) / g.torso
        detach = np.fmax(along, ends)
    torso_ok = oh & os_ & (np.linalg.norm(ms - mh, axis=1) > 0.3 * g.torso)
    thr = adaptive(np.where(torso_ok, detach, np.nan), t.spine_detached, t.mad_k)
    detached = torso_ok & (detach > thr)
    out += findings_from_mask(
        "spine_detached", "error", detached, g.persons.ann_ids, g.persons.image_ids,
        lambda r: f"spine chain {detach[r]:.2f} torso lengths away from the hip-shoulder line (limit {thr:.2f})",
        scores=detach, keypoints=names)
    return out


def lr_swaps(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    """Left/right swaps: limbs whose swapped labelling is much shorter (crossing test), and torso pairs
    whose left-right orientation disagrees with the rest of the torso."""
    out: list[Finding] = []
    n = len(g.persons)
    hits = np.zeros(n, dtype=bool)
    detail: list[list[str]] = [[] for _ in range(n)]
    score = np.zeros(n)
    for parent, child, natural in CROSSINGS:
        ratio, gain = (t.crossing_ratio_natural, t.crossing_gain_natural) if natural else \
            (t.crossing_ratio, t.crossing_gain)
        costs = g.crossing_costs(parent, child)
        if costs is None:
            continue
        cur, swp, ok = costs
        with np.errstate(invalid="ignore", divide="ignore"):
            bad = ok & (swp < ratio * cur) & ((cur - swp) > gain * g.torso)
        for r in np.flatnonzero(bad):
            detail[r].append(f"{child}s")
        hits |= bad
        score = np.maximum(score, np.where(bad, 1 - swp / np.maximum(cur, 1e-9), 0))
    # torso orientation: signed width of each left/right pair across the hip->shoulder axis
    signed = g.signed_widths()
    if len(signed) >= 2:
        mat = np.stack(list(signed.values()), 1)
        strong = np.abs(mat) > t.chirality
        votes = np.where(strong, np.sign(mat), 0)
        for j, part in enumerate(signed):
            others = np.delete(votes, j, axis=1)
            # at least two other pairs must agree among themselves: with one, a twist looks the same
            agree_other = (np.abs(others).sum(1) >= 2) & (np.abs(others.sum(1)) == np.abs(others).sum(1))
            bad = strong[:, j] & agree_other & (votes[:, j] == -np.sign(others.sum(1)))
            for r in np.flatnonzero(bad):
                detail[r].append(f"{part}s")
            hits |= bad
            score = np.maximum(score, np.where(bad, np.abs(np.nan_to_num(mat[:, j])), 0))
    out += findings_from_mask("lr_swap", "error", hits, g.persons.ann_ids, g.persons.image_ids,
                              lambda r: f"left/right swapped: {', '.join(detail[r])}", scores=score,
                              keypoints=lambda r: [f"{s}_{p[:-1]}" for p in detail[r] for s in ("left", "right")])
    return out


def scale(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    """Limbs too long for the body, and skeletons at a scale that does not fit their box."""
    ref = {name: reference_length(a, b) for name, a, b in SCALE_SEGMENTS}
    limb_ratio: dict[str, np.ndarray] = {}
    for seg, limb in LIMB_OF.items():
        if seg not in g.seg_len:
            continue
        r = np.where(g.seg_ok[seg], g.seg_len[seg] / (ref[seg] * g.stature), np.nan)
        limb_ratio[limb] = np.fmax(limb_ratio.get(limb, np.full(len(g.persons), np.nan)), r)
    out: list[Finding] = []
    if limb_ratio:
        names = list(limb_ratio)
        mat = np.stack([limb_ratio[k] for k in names], 1)
        thr = adaptive(mat.ravel(), t.limb_scale, t.mad_k)
        bad = mat > thr
        rows = bad.any(1)
        worst = np.nanargmax(np.where(np.isfinite(mat), mat, -np.inf), axis=1)
        out += findings_from_mask(
            "limb_scale", "error", rows, g.persons.ann_ids, g.persons.image_ids,
            lambda r: f"{names[worst[r]].replace('_', ' ')} is {mat[r, worst[r]]:.1f}x the length the rest of "
                      f"the body allows (limit {thr:.2f})",
            scores=np.nanmax(np.where(np.isfinite(mat), mat, 0), axis=1))
    # keypoint extent versus box extent
    xy = np.where(g.usable[..., None], g.xy, np.nan)
    with quiet():
        ext = np.nanmax(xy, axis=1) - np.nanmin(xy, axis=1)
        box = g.persons.boxes[:, 2:]
        r = np.nanmax(ext / box, axis=1)
    enough = g.n_usable >= 8
    hi = adaptive(np.where(enough, r, np.nan), t.skeleton_scale_high, t.mad_k)
    big = enough & (r > hi)
    small = enough & (r < t.skeleton_scale_low)
    out += findings_from_mask("skeleton_scale", "error", big | small, g.persons.ann_ids, g.persons.image_ids,
                              lambda r_: f"keypoints span {r[r_]:.2f}x their box", scores=r)
    return out


def noise(g: BodyGeometry, t: Thresholds) -> list[Finding]:
    """Heavy noise: a spine chain far more jagged than the file's annotations are (each person's annotation noise
    against the file's, in units of the SpineTrack sigmas; see ``geometry.person_noise``).

    The chain is the densest run of points in the layout, and real spines are smooth at that spacing.
    """
    chain = g.sk.spine_chain
    if len(chain) < 5:
        return []
    level = person_noise(g)
    thr = max(t.noise, t.noise_ratio * g.noise)
    bad = level > thr
    return findings_from_mask("noise", "error", bad, g.persons.ann_ids, g.persons.image_ids,
                              lambda r: f"spine chain jagged beyond plausible (noise {level[r]:.2f} x the "
                                        f"annotators' spread, limit {thr:.2f})", scores=level,
                              keypoints=[g.sk.names[i] for i in chain])


DETECTORS = (zero_visible, outside, collapsed, duplicates, spine, lr_swaps, scale, noise)


def detection_scores(report: Report, truth: list[dict], ann_ids: np.ndarray) -> dict[str, dict[str, float]]:
    """Recall per corruption kind and overall precision of error findings against injected truth.

    An annotation counts as detected when any error finding names it (whatever the check).
    """
    flagged = report.flagged_annotation_ids("error")
    corrupted = {t["annotation_id"]: t["kind"] for t in truth}
    out: dict[str, dict[str, float]] = {}
    for kind in sorted(set(corrupted.values())):
        ids = [a for a, k in corrupted.items() if k == kind]
        out[kind] = {"n": len(ids), "recall": sum(a in flagged for a in ids) / len(ids)}
    clean = [int(a) for a in ann_ids if int(a) not in corrupted]
    fp = sum(a in flagged for a in clean)
    tp = sum(a in flagged for a in corrupted)
    out["all"] = {
        "n": len(corrupted),
        "recall": tp / max(len(corrupted), 1),
        "precision": tp / max(tp + fp, 1),
        "false_positive_rate": fp / max(len(clean), 1),
    }
    return out
