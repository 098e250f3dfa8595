"""COCO OKS AP/AR per keypoint group, vectorised, identical to pycocotools' ``COCOeval`` ('keypoints').

The SpineTrack protocol (the authors' ``tools/metric.py``): for each group (body 0-16, feet 20-25, the
9-point spine chain, overall = all), slice ground truth and predictions to the group's keypoints and
sigmas, recompute ``num_keypoints`` from the sliced visibilities (so persons with no labelled point in
the group are ignored), keep the person's full ``area``, maxDets 20, OKS thresholds .50:.05:.95, area
ranges all / medium / large. Detections whose keypoint scores are all <= 0 are dropped, as xtcocotools
(the authors' evaluator) does; pass ``drop_unscored=False`` for pycocotools' behaviour.

Everything pycocotools does per pair or per image in Python is done here on flat arrays: the OKS terms
of all (detection, ground truth) pairs of all images at once (shared by the groups), and the greedy
matching one detection rank at a time for all images, thresholds and area ranges together, on the
pairs whose OKS reaches the lowest threshold.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .persons import Persons

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RNGS = ((0, 1e10), (32 ** 2, 96 ** 2), (96 ** 2, 1e10))
MAX_DETS = 20
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
DEFAULT_GROUPS = ("overall", "body", "feet", "spine")


def keypoint_similarity(a: np.ndarray, b: np.ndarray, area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """[..., K] OKS terms exp(-d^2 / (2 * area * (2 sigma)^2)) between paired points ``a`` and ``b`` [..., K, >=2]
    of persons with ``area`` [...]."""
    var = (2 * np.asarray(sigmas)) ** 2
    d2 = ((a[..., :2] - b[..., :2]) ** 2).sum(axis=-1)
    return np.exp(-d2 / (2 * np.maximum(area, np.spacing(1))[..., None] * var))


def oks(gt: np.ndarray, dt: np.ndarray, area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS between paired persons: ``gt`` and ``dt`` [N, K, 3], ``area`` [N] of the ground truth.

    Mean of exp(-d^2 / (2 * area * (2 sigma)^2)) over the ground truth's labelled points (v > 0);
    NaN where the ground truth has no labelled point.
    """
    vis = gt[..., 2] > 0
    n = vis.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (keypoint_similarity(gt, dt, area, sigmas) * vis).sum(axis=1) / n, np.nan)


def evaluate(gt: Persons, dt: Persons, groups: Sequence[str] = DEFAULT_GROUPS,
             drop_unscored: bool = True) -> dict[str, dict[str, float]]:
    """AP/AR figures per group of ``dt`` (predictions) against ``gt`` (labels) on the images of ``gt``:
    ``{"overall": {"AP": ..., ...}, "body": {...}, ...}``. Raises ``ValueError`` for unknown groups, predictions
    on images the ground truth does not have, and ground truth without the area the metric needs."""
    skeleton = gt.skeleton
    if dt.skeleton.num_keypoints != skeleton.num_keypoints:
        raise ValueError(f"predictions have {dt.skeleton.num_keypoints} keypoints, the ground truth "
                         f"{skeleton.num_keypoints}")
    if not np.isfinite(gt.areas).all():
        raise ValueError(f"ground truth annotation {gt.ann_ids[np.argmax(~np.isfinite(gt.areas))]} has no 'area' "
                         "(the OKS scale)")
    all_image_ids = gt.images["id"].to_numpy(dtype=np.int64)
    unknown = [g for g in groups if g not in skeleton.groups]
    if unknown:
        raise ValueError(f"unknown keypoint group(s) {unknown}; the {skeleton.name} layout has "
                         f"{sorted(skeleton.groups)}")
    missing = np.setdiff1d(dt.image_ids, all_image_ids)
    if len(missing):
        raise ValueError(f"predictions for images that are not in the ground truth, e.g. {missing[:3].tolist()}")
    images = np.unique(all_image_ids)
    g_img = np.searchsorted(images, gt.image_ids)
    d_img = np.searchsorted(images, dt.image_ids)
    pd_, pg = _same_image_pairs(d_img, dt.category_ids, g_img, gt.category_ids)
    # per pair and keypoint, exp(-e) of the labelled GT points (shared by all groups); pairs whose GT has
    # no labelled point in some group also get pycocotools' box-distance terms
    vis_all = gt.keypoints[..., 2] > 0
    idxs = {g: np.array(skeleton.groups[g]) for g in groups}
    unlabelled = np.zeros(len(gt.image_ids), dtype=bool)
    for idx in idxs.values():
        unlabelled |= ~vis_all[:, idx].any(axis=1)
    need_box = unlabelled[pg]
    near = _pair_terms(dt.keypoints[pd_], gt.keypoints[pg], gt.areas[pg], skeleton.sigmas) * vis_all[pg]
    box = _box_terms(dt.keypoints[pd_[need_box]], gt.boxes[pg[need_box]], gt.areas[pg[need_box]],
                     skeleton.sigmas)
    out = {}
    for g, idx in idxs.items():
        k1_gt = vis_all[:, idx].sum(axis=1)
        k1 = k1_gt[pg]
        pair_oks = near[:, idx].sum(axis=1) / np.maximum(k1, 1)
        nb = k1[need_box] == 0
        pair_oks[np.flatnonzero(need_box)[nb]] = box[nb][:, idx].sum(axis=1) / len(idx)
        keep = (dt.keypoints[:, idx, 2] > 0).any(axis=1) if drop_unscored else np.ones(len(dt.scores), bool)
        # detection areas as pycocotools' loadRes computes them: the box's when results carry a bbox,
        # else the keypoint extent's
        x, y = dt.keypoints[:, idx, 0], dt.keypoints[:, idx, 1]
        extent = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1)) if len(dt) else np.zeros(0)
        d_area = np.where(np.isfinite(dt.areas), dt.areas, extent)
        g_ignore = gt.crowd | (k1_gt == 0)  # num_keypoints recomputed for the group
        per_cat = []
        for c in np.unique(gt.category_ids):
            per_cat.append(_evaluate_category(
                g_img, gt.category_ids == c, gt.areas, gt.crowd, g_ignore, d_img,
                (dt.category_ids == c) & keep, dt.scores, d_area, pd_, pg, pair_oks, len(images)))
        precision = np.stack([p for p, _ in per_cat], axis=2) if per_cat else -np.ones((10, 101, 0, 3))
        recall = np.stack([r for _, r in per_cat], axis=1) if per_cat else -np.ones((10, 0, 3))
        out[g] = _summarize(precision, recall)
    return out


def _same_image_pairs(d_img: np.ndarray, d_cat: np.ndarray, g_img: np.ndarray,
                      g_cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, ground truth) index pairs of the same image and category."""
    base = np.int64(max(g_cat.max(initial=0), d_cat.max(initial=0)) + 1)
    g_key = g_img.astype(np.int64) * base + g_cat
    d_key = d_img.astype(np.int64) * base + d_cat
    g_order = np.argsort(g_key, kind="stable")
    lo = np.searchsorted(g_key[g_order], d_key, side="left")
    counts = np.searchsorted(g_key[g_order], d_key, side="right") - lo
    pd_ = np.repeat(np.arange(len(d_img)), counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return pd_, g_order[np.repeat(lo, counts) + offs]


def _pair_terms(d: np.ndarray, g: np.ndarray, g_area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """exp(-e) per pair and keypoint: e = d^2 / (2 s^2 (2 sigma)^2), as pycocotools computes it."""
    dx = d[..., 0] - g[..., 0]
    dy = d[..., 1] - g[..., 1]
    return np.exp(-((dx ** 2 + dy ** 2) / ((sigmas * 2) ** 2) / (g_area[:, None] + np.spacing(1)) / 2))


def _box_terms(d: np.ndarray, g_box: np.ndarray, g_area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """exp(-e) from the distance to the GT box grown by its size on every side (pycocotools' rule for a
    GT with no labelled point)."""
    x0 = (g_box[:, 0] - g_box[:, 2])[:, None]
    x1 = (g_box[:, 0] + g_box[:, 2] * 2)[:, None]
    y0 = (g_box[:, 1] - g_box[:, 3])[:, None]
    y1 = (g_box[:, 1] + g_box[:, 3] * 2)[:, None]
    z = np.zeros(d.shape[:2])
    bx = np.maximum(z, x0 - d[..., 0]) + np.maximum(z, d[..., 0] - x1)
    by = np.maximum(z, y0 - d[..., 1]) + np.maximum(z, d[..., 1] - y1)
    return np.exp(-((bx ** 2 + by ** 2) / ((sigmas * 2) ** 2) / (g_area[:, None] + np.spacing(1)) / 2))


def _evaluate_category(g_img, g_sel, g_area, g_crowd, g_ignore, d_img, d_sel, d_score, d_area, pd_, pg,
                       pair_oks, n_img) -> tuple[np.ndarray, np.ndarray]:
    """Precision [T, R, A] and recall [T, A] of one category (pycocotools' evaluateImg + accumulate)."""
    T, A, R = len(IOU_THRS), len(AREA_RNGS), len(REC_THRS)
    n_g, n_d = len(g_img), len(d_img)
    # each image's detections by score (stable), the best MAX_DETS take part
    dets = np.flatnonzero(d_sel)
    order = dets[np.lexsort((dets, -d_score[dets], d_img[dets]))]
    counts = np.bincount(d_img[order], minlength=n_img)
    rank_sorted = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    take = rank_sorted < MAX_DETS
    part, rank_part = order[take], rank_sorted[take]  # by image, best first
    rank = np.full(n_d, -1)
    rank[part] = rank_part
    g_ign = np.zeros((A, n_g), dtype=bool)
    for a, (lo, hi) in enumerate(AREA_RNGS):
        g_ign[a] = g_ignore | (g_area < lo) | (g_area > hi)
    # candidate pairs: taking part, same category, OKS >= the lowest threshold
    cand = (rank[pd_] >= 0) & g_sel[pg] & (pair_oks >= IOU_THRS[0])
    c_d, c_g, c_oks = pd_[cand], pg[cand], pair_oks[cand]
    c_rank = rank[c_d]
    thr = np.minimum(IOU_THRS, 1 - 1e-10)
    gtm = np.zeros((T, A, n_g), dtype=bool)
    dtm = np.zeros((T, A, n_d), dtype=bool)
    dt_ig = np.zeros((T, A, n_d), dtype=bool)
    for r in range(int(rank_part.max(initial=-1)) + 1):
        s = c_rank == r
        if not s.any():
            continue
        d, g, o = c_d[s], c_g[s], c_oks[s]
        ign = g_ign[:, g]  # [A, C]
        # pycocotools walks each image's GT with the ignored ones last; the detection takes the best
        # available non-ignored GT with OKS >= t (the later one on ties), else the best ignored one;
        # crowd GT stay available after a match
        ok = (o[None, None] >= thr[:, None, None]) & (~gtm[:, :, g] | g_crowd[g][None, None])  # [T, A, C]
        tt, aa, cc = np.nonzero(ok)
        if not len(tt):
            continue
        group = (tt * A + aa) * n_d + d[cc]
        srt = np.lexsort((g[cc], o[cc], ~ign[aa, cc], group))
        last = np.r_[group[srt][1:] != group[srt][:-1], True]
        w = srt[last]
        wt, wa, wd, wg = tt[w], aa[w], d[cc[w]], g[cc[w]]
        gtm[wt, wa, wg] = True
        dtm[wt, wa, wd] = True
        dt_ig[wt, wa, wd] = g_ign[wa, wg]
    for a, (lo, hi) in enumerate(AREA_RNGS):
        out_of_range = (d_area < lo) | (d_area > hi)
        dt_ig[:, a] |= ~dtm[:, a] & out_of_range[None]
    # accumulate: the images' detections concatenated (image order, best first), stable sort by -score
    acc = part[np.argsort(-d_score[part], kind="mergesort")]
    precision = -np.ones((T, R, A))
    recall = -np.ones((T, A))
    gsel = np.flatnonzero(g_sel)
    for a in range(A):
        npig = int((~g_ign[a, gsel]).sum())
        if npig == 0:
            continue
        m, ig = dtm[:, a, acc], dt_ig[:, a, acc]
        tp_sum = np.cumsum(m & ~ig, axis=1).astype(float)
        fp_sum = np.cumsum(~m & ~ig, axis=1).astype(float)
        nd = len(acc)
        for t in range(T):
            tp, fp = tp_sum[t], fp_sum[t]
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            recall[t, a] = rc[-1] if nd else 0
            if nd:
                pr = np.maximum.accumulate(pr[::-1])[::-1]
            inds = np.searchsorted(rc, REC_THRS, side="left")
            q = np.zeros(R)
            valid = inds < nd
            q[valid] = pr[inds[valid]]
            precision[t, :, a] = q
    return precision, recall


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
