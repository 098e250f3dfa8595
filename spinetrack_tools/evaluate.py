"""COCO OKS AP/AR per keypoint group, vectorised, identical to pycocotools' ``COCOeval`` ('keypoints').

The SpineTrack protocol (the authors' ``tools/metric.py``): for each group (body 0-16, feet 20-25, the
9-point spine chain, overall = all), slice ground truth and predictions to the group's keypoints and
sigmas, recompute ``num_keypoints`` from the sliced visibilities (so persons with no labelled point in
the group are ignored), keep the person's full ``area``, maxDets 20, OKS thresholds .50:.05:.95, area
ranges all / medium / large. Detections whose keypoint scores are all <= 0 are dropped, as xtcocotools
(the authors' evaluator) does; pass ``drop_unscored=False`` for pycocotools' behaviour.

Everything pycocotools does per pair or per image in Python is done here on flat arrays: the OKS of all
(detection, ground truth) pairs of all images at once, and the greedy matching one detection rank at a
time for all images, thresholds and area ranges together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .skeleton import SPINETRACK37, Skeleton

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RNGS = ((0, 1e10), (32 ** 2, 96 ** 2), (96 ** 2, 1e10))
MAX_DETS = 20
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
DEFAULT_GROUPS = ("overall", "body", "feet", "spine")


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


@dataclass
class GroundTruth:
    """Ground-truth persons as arrays (file order)."""

    image_ids: np.ndarray  # [G]
    category_ids: np.ndarray  # [G]
    keypoints: np.ndarray  # [G, K, 3]
    boxes: np.ndarray  # [G, 4]
    areas: np.ndarray  # [G]
    iscrowd: np.ndarray  # [G] bool
    all_image_ids: np.ndarray  # every image of the file (evaluated even when empty)


@dataclass
class Detections:
    """Predicted persons as arrays (file order)."""

    image_ids: np.ndarray  # [D]
    category_ids: np.ndarray  # [D]
    keypoints: np.ndarray  # [D, K, 3] (x, y, score)
    scores: np.ndarray  # [D]
    boxes: np.ndarray | None = None  # [D, 4] when the results carried a 'bbox'


def ground_truth_from_coco(ds: Any) -> GroundTruth:
    """From a loaded ``CocoKeypoints``."""
    return GroundTruth(ds.image_ids, ds.category_ids, ds.keypoints, ds.boxes, ds.areas,
                       np.nan_to_num(ds.iscrowd) > 0, np.unique(ds.images["id"].to_numpy()))


def detections_from_results(results: Sequence[dict], k: int) -> Detections:
    """From a COCO results list."""
    n = len(results)
    kp = np.array([r["keypoints"] for r in results], dtype=np.float64).reshape(n, k, 3) if n \
        else np.zeros((0, k, 3))
    has_bbox = n > 0 and all("bbox" in r for r in results)
    return Detections(
        np.array([r["image_id"] for r in results], dtype=np.int64),
        np.array([r.get("category_id", 1) for r in results], dtype=np.int64),
        kp, np.array([r["score"] for r in results], dtype=np.float64),
        np.array([r["bbox"] for r in results], dtype=np.float64) if has_bbox else None)


def evaluate(gt: GroundTruth, dt: Detections, skeleton: Skeleton = SPINETRACK37,
             groups: Sequence[str] = DEFAULT_GROUPS, drop_unscored: bool = True) -> dict[str, dict[str, float]]:
    """AP/AR figures per group: ``{"overall": {"AP": ..., ...}, "body": {...}, ...}``."""
    unknown = [g for g in groups if g not in skeleton.groups]
    if unknown:
        raise ValueError(f"unknown keypoint group(s) {unknown}; the {skeleton.name} layout has "
                         f"{sorted(skeleton.groups)}")
    missing = np.setdiff1d(dt.image_ids, gt.all_image_ids)
    if len(missing):
        raise ValueError(f"predictions for images that are not in the ground truth, e.g. {missing[:3].tolist()}")
    out = {}
    for g in groups:
        idx = np.array(skeleton.groups[g])
        keep = np.ones(len(dt.scores), dtype=bool)
        if drop_unscored:
            keep = (dt.keypoints[:, idx, 2] > 0).any(axis=1)
        out[g] = evaluate_keypoints(gt.image_ids, gt.category_ids, gt.keypoints[:, idx], gt.boxes, gt.areas,
                                    gt.iscrowd, dt.image_ids[keep], dt.category_ids[keep],
                                    dt.keypoints[keep][:, idx], dt.scores[keep],
                                    None if dt.boxes is None else dt.boxes[keep], skeleton.sigmas[idx],
                                    gt.all_image_ids)
    return out


def evaluate_keypoints(g_img: np.ndarray, g_cat: np.ndarray, g_kp: np.ndarray, g_box: np.ndarray,
                       g_area: np.ndarray, g_crowd: np.ndarray, d_img: np.ndarray, d_cat: np.ndarray,
                       d_kp: np.ndarray, d_score: np.ndarray, d_box: np.ndarray | None, sigmas: np.ndarray,
                       all_images: np.ndarray) -> dict[str, float]:
    """The ten COCO keypoint figures for one keypoint set (pycocotools semantics)."""
    # ground-truth ignore: crowd, or no labelled point in this keypoint set (num_keypoints recomputed)
    g_ignore = g_crowd | ((g_kp[..., 2] > 0).sum(axis=1) == 0)
    # detection areas as pycocotools' loadRes computes them: bbox w*h, else the keypoint extent
    if d_box is not None:
        d_area = d_box[:, 2] * d_box[:, 3]
    elif len(d_kp):
        x, y = d_kp[..., 0], d_kp[..., 1]
        d_area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
    else:
        d_area = np.zeros(0)
    cats = np.unique(g_cat)
    T, A, R = len(IOU_THRS), len(AREA_RNGS), len(REC_THRS)
    precision = -np.ones((T, R, len(cats), A))
    recall = -np.ones((T, len(cats), A))
    for ci, c in enumerate(cats):
        gsel, dsel = g_cat == c, d_cat == c
        res = _evaluate_category(g_img[gsel], g_kp[gsel], g_box[gsel], g_area[gsel], g_crowd[gsel],
                                 g_ignore[gsel], d_img[dsel], d_kp[dsel], d_score[dsel], d_area[dsel], sigmas,
                                 np.sort(all_images))
        precision[:, :, ci], recall[:, ci] = res
    return _summarize(precision, recall)


def _evaluate_category(g_img, g_kp, g_box, g_area, g_crowd, g_ignore, d_img, d_kp, d_score, d_area, sigmas,
                       images) -> tuple[np.ndarray, np.ndarray]:
    T, A, R = len(IOU_THRS), len(AREA_RNGS), len(REC_THRS)
    img_pos = {int(i): p for p, i in enumerate(images)}
    gi = np.array([img_pos[int(i)] for i in g_img], dtype=np.int64)
    di = np.array([img_pos[int(i)] for i in d_img], dtype=np.int64)
    n_img = len(images)
    # ground truth per image, in file order; detections per image sorted by score (stable), top MAX_DETS
    g_order = np.argsort(gi, kind="stable")
    g_count = np.bincount(gi, minlength=n_img)
    g_start = np.concatenate([[0], np.cumsum(g_count)[:-1]])
    g_rank = np.empty(len(gi), dtype=np.int64)
    g_rank[g_order] = np.arange(len(gi)) - g_start[gi[g_order]]
    d_order = np.lexsort((np.arange(len(di)), -d_score, di))  # image, then -score, then file order
    d_count = np.bincount(di, minlength=n_img)
    d_start = np.concatenate([[0], np.cumsum(d_count)[:-1]])
    d_rank_sorted = np.arange(len(di)) - d_start[di[d_order]]
    keep = d_rank_sorted < MAX_DETS
    d_sel = d_order[keep]  # detections that take part, grouped by image, best first
    d_rank = d_rank_sorted[keep]
    G = int(g_count.max(initial=0))
    D = int(min(d_count.max(initial=0), MAX_DETS))

    # OKS of every (detection, ground truth) pair in the same image: [n_img, D, G]
    gg = np.full((n_img, G), -1, dtype=np.int64)  # GT index at (image, position)
    gg[gi, g_rank] = np.arange(len(gi))
    dd = np.full((n_img, D), -1, dtype=np.int64)  # detection index at (image, rank)
    dd[di[d_sel], d_rank] = d_sel
    ious = np.zeros((n_img, D, G))
    pi, pd, pg = np.nonzero((dd[:, :, None] >= 0) & (gg[:, None, :] >= 0))
    if len(pi):
        ious[pi, pd, pg] = _pair_oks(d_kp[dd[pi, pd]], g_kp[gg[pi, pg]], g_box[gg[pi, pg]], g_area[gg[pi, pg]],
                                     sigmas)
    g_valid = gg >= 0
    d_valid = dd >= 0
    area_g = np.where(g_valid, g_area[np.maximum(gg, 0)], 0.0)
    crowd_g = g_valid & g_crowd[np.maximum(gg, 0)]
    ign_base = g_valid & g_ignore[np.maximum(gg, 0)]
    area_d = np.where(d_valid, d_area[np.maximum(dd, 0)], 0.0)

    dtm = np.zeros((T, A, n_img, D), dtype=bool)  # matched
    dt_ig = np.zeros((T, A, n_img, D), dtype=bool)
    g_ign = np.zeros((A, n_img, G), dtype=bool)
    for a, (lo, hi) in enumerate(AREA_RNGS):
        g_ign[a] = ign_base | (area_g < lo) | (area_g > hi)
    # pycocotools sorts each image's ground truth with ignored ones last (stable) and, per detection,
    # takes the best unmatched non-ignored GT with OKS >= t (the last one on ties), else the best ignored
    # one; crowd GT can be matched many times.
    gtm = np.zeros((T, A, n_img, G), dtype=bool)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[:, None, None, None]
    g_pos = np.broadcast_to(np.arange(G), (n_img, G))
    for r in range(D):
        iou_r = ious[:, r, :][None, None]  # [1, 1, n_img, G]
        avail = (~gtm | crowd_g[None, None]) & g_valid[None, None]
        ok = avail & (iou_r >= thr)
        best = np.full((T, A, n_img), -1, dtype=np.int64)
        for ignored in (False, True):
            cand = ok & (g_ign[None] == ignored)
            # order of the GT loop: non-ignored first, each in file order; ties go to the later one
            score = np.where(cand, iou_r, -np.inf)
            top = score.max(axis=3, keepdims=True)
            is_top = cand & (score == top)
            last = G - 1 - np.argmax(is_top[..., ::-1], axis=3)
            found = is_top.any(axis=3) & (best < 0)
            best = np.where(found, last, best)
        has = best >= 0
        tt, aa, ii = np.nonzero(has)
        gtm[tt, aa, ii, best[has]] = True
        dtm[:, :, :, r] = has
        dt_ig[:, :, :, r] = np.where(has, np.take_along_axis(g_ign[None].repeat(T, 0), np.maximum(best, 0)[..., None],
                                                             axis=3)[..., 0], False)
    for a, (lo, hi) in enumerate(AREA_RNGS):
        out_of_range = d_valid & ((area_d < lo) | (area_d > hi))
        dt_ig[:, a] |= ~dtm[:, a] & out_of_range[None]

    # accumulate: pycocotools concatenates the images' detections (image order, best first) and sorts by
    # -score with a stable sort
    precision = -np.ones((T, R, A))
    recall = -np.ones((T, A))
    has_any = (g_count > 0) | (d_count > 0)  # images pycocotools keeps (evaluateImg returns None otherwise)
    flat_i, flat_r = np.nonzero(d_valid & has_any[:, None])
    flat_scores = d_score[dd[flat_i, flat_r]]
    order = np.argsort(-flat_scores, kind="mergesort")
    for a in range(A):
        npig = int((g_valid & ~g_ign[a] & has_any[:, None]).sum())
        if npig == 0:
            continue
        m = dtm[:, a, flat_i, flat_r][:, order]
        ig = dt_ig[:, a, flat_i, flat_r][:, order]
        tps = m & ~ig
        fps = ~m & ~ig
        tp_sum = np.cumsum(tps, axis=1).astype(float)
        fp_sum = np.cumsum(fps, axis=1).astype(float)
        for t in range(T):
            tp, fp = tp_sum[t], fp_sum[t]
            nd = len(tp)
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            recall[t, a] = rc[-1] if nd else 0
            pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
            inds = np.searchsorted(rc, REC_THRS, side="left")
            q = np.zeros(R)
            valid = inds < nd
            q[valid] = pr[inds[valid]]
            precision[t, :, a] = q
    return precision, recall


def _pair_oks(d: np.ndarray, g: np.ndarray, g_box: np.ndarray, g_area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """pycocotools' ``computeOks`` for pairs: labelled GT points, or the distance to the GT box grown by its
    size on every side when the GT has none."""
    var = (sigmas * 2) ** 2
    vis = g[..., 2] > 0
    k1 = vis.sum(axis=1)
    dx = d[..., 0] - g[..., 0]
    dy = d[..., 1] - g[..., 1]
    x0 = (g_box[:, 0] - g_box[:, 2])[:, None]
    x1 = (g_box[:, 0] + g_box[:, 2] * 2)[:, None]
    y0 = (g_box[:, 1] - g_box[:, 3])[:, None]
    y1 = (g_box[:, 1] + g_box[:, 3] * 2)[:, None]
    z = np.zeros_like(dx)
    bx = np.maximum(z, x0 - d[..., 0]) + np.maximum(z, d[..., 0] - x1)
    by = np.maximum(z, y0 - d[..., 1]) + np.maximum(z, d[..., 1] - y1)
    none = (k1 == 0)[:, None]
    dx = np.where(none, bx, dx)
    dy = np.where(none, by, dy)
    e = (dx ** 2 + dy ** 2) / var / (g_area[:, None] + np.spacing(1)) / 2
    w = np.where(none, True, vis)
    return (np.exp(-e) * w).sum(axis=1) / np.where(k1 > 0, k1, d.shape[1])


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    def mean(s: np.ndarray) -> float:
        s = s[s > -1]
        return float(np.mean(s)) if len(s) else -1.0

    t50, t75 = 0, 5
    return {
        "AP": mean(precision[:, :, :, 0]), "AP50": mean(precision[t50, :, :, 0]),
        "AP75": mean(precision[t75, :, :, 0]), "APm": mean(precision[:, :, :, 1]),
        "APl": mean(precision[:, :, :, 2]), "AR": mean(recall[:, :, 0]), "AR50": mean(recall[t50, :, 0]),
        "AR75": mean(recall[t75, :, 0]), "ARm": mean(recall[:, :, 1]), "ARl": mean(recall[:, :, 2]),
    }
