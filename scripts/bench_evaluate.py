#!/usr/bin/env python3
"""Benchmark: `spinetrack evaluate` vs pycocotools for the four SpineTrack groups, with a parity check.

Synthetic set (seeded): 5,000 images, ~12,000 ground-truth persons (some crowd, some with no labelled
point, v in {0,1,2}), ~30,000 predictions (noisy copies, duplicates and false positives). pycocotools
gets each group's inputs sliced (deep copies, timed with it); ours starts from the full dicts
(conversion to arrays timed). Prints both times, the ratio (target >= 10x) and the largest difference
over the 10 figures of the 4 groups (target < 1e-9).
"""

from __future__ import annotations

import argparse
import time

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' reference implementations
from spinetrack_tools.evaluate import DEFAULT_GROUPS, STAT_NAMES, evaluate
from spinetrack_tools.persons import Persons
from spinetrack_tools.skeleton import SPINETRACK37
from tests.references import pycocotools_reference


def synthetic(n_img: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    K = SPINETRACK37.num_keypoints
    images, anns, dets = [], [], []
    for i in range(1, n_img + 1):
        images.append({"id": i, "width": 1280, "height": 720, "file_name": f"{i:012d}.jpg"})
        for _ in range(rng.poisson(2.4)):
            w, h = rng.uniform(20, 400), rng.uniform(40, 600)
            x, y = rng.uniform(0, 1280 - w), rng.uniform(0, 720 - min(h, 700))
            v = rng.choice([0, 1, 2], K, p=[0.15, 0.15, 0.7])
            kp = np.stack([x + rng.uniform(0, w, K), y + rng.uniform(0, h, K), v], 1)
            if rng.random() < 0.03:
                v[:] = 0
                kp[:, 2] = 0
            kp[v == 0, :2] = 0
            crowd = int(rng.random() < 0.01)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                         "area": 0.55 * w * h, "iscrowd": crowd, "num_keypoints": int((v > 0).sum()),
                         "keypoints": kp.ravel().tolist()})
            for c in range(int(rng.random() < 0.95) + rng.poisson(0.8)):
                noise = (0.03 if c == 0 else 0.12) * max(w, h)
                d = np.stack([np.where(v > 0, kp[:, 0], x + w / 2) + rng.normal(0, noise, K),
                              np.where(v > 0, kp[:, 1], y + h / 2) + rng.normal(0, noise, K),
                              rng.uniform(0.05, 1, K)], 1)
                dets.append({"image_id": i, "category_id": 1, "keypoints": d.ravel().tolist(),
                             "score": float(rng.uniform(0.3, 1) if c == 0 else rng.uniform(0, 0.6))})
        for _ in range(rng.poisson(1.8)):
            d = np.stack([rng.uniform(0, 1280, K), rng.uniform(0, 720, K), rng.uniform(0.05, 1, K)], 1)
            dets.append({"image_id": i, "category_id": 1, "keypoints": d.ravel().tolist(),
                         "score": float(rng.uniform(0, 0.5))})
    gt = {"images": images, "annotations": anns, "categories": [SPINETRACK37.to_category()]}
    return gt, dets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    gt, dets = synthetic(args.images)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} ground-truth persons, {len(dets)} predictions")
    t_ref, t_ours = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()  # includes pycocotools' input slicing (deep copies), a small part of its time
        ref = {g: pycocotools_reference(gt, dets, SPINETRACK37.groups[g], SPINETRACK37.sigmas) for g in DEFAULT_GROUPS}
        t_ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = evaluate(Persons.from_coco(gt), Persons.from_results(dets, SPINETRACK37), drop_unscored=False)
        t_ours.append(time.perf_counter() - t0)
    diff = max(abs(ref[g][i] - res[g][k]) for g in DEFAULT_GROUPS for i, k in enumerate(STAT_NAMES))
    r, o = np.median(t_ref), np.median(t_ours)
    for g in DEFAULT_GROUPS:
        print(f"  {g:8s} AP {res[g]['AP']:.4f}  AR {res[g]['AR']:.4f}")
    print(f"pycocotools, 4 groups: {r:.2f} s; spinetrack evaluate: {o:.2f} s; ratio {r / o:.1f}x (target >= 10x)")
    print(f"largest difference over the 10 figures x 4 groups: {diff:.2e} (target < 1e-9)")


if __name__ == "__main__":
    main()
