#!/usr/bin/env python3
"""Benchmark of `spinetrack validate-biomech` (fast path) and its deep fit.

Prints, measured in one run:
- speed: the fast path on about 60k annotations (and pycocotools' load of the same file for scale);
- false positives: the share of plausible synthetic annotations (the whole range of motion of the
  OpenSim model, people of every build and annotators of every habit, all postures incl. lying and
  inverted, random cameras, annotation noise 0.1 x the annotators' spread, a seed the calibration never
  saw) that fail any rule, per posture (target < 2%; scripts/bench_plausibility.py measures the same on
  people from an independent generator);
- detection: spine points out of order (two chain points swapped), spine chains bent (one interior
  point moved sideways) or displaced (the whole chain moved) by 20-40% of the torso length
  (target >= 95% each);
- the deep fit's time per annotation and its residuals on plausible vs corrupted annotations.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from spinetrack_tools.biomech import rules
from spinetrack_tools.biomech.calibrate import corrupt_spines, plausible_sample
from spinetrack_tools.biomech.geometry import BodyGeometry
from spinetrack_tools.coco import save_coco


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000, help="plausible synthetic images (1-3 persons each)")
    ap.add_argument("--speed-annotations", type=int, default=60000)
    ap.add_argument("--deep", type=int, default=20, help="annotations per class for the deep-fit timing")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    t = rules.Thresholds.load()

    ds, f = plausible_sample(args.images, args.seed, noise=0.1)
    ex = rules.excess(f, t)
    flagged = np.sum(list(ex.values()), axis=0) > 0
    post = ds.attrs["posture"].astype(str)
    print(f"plausible annotations: {len(ds)}; flagged {flagged.mean():.2%} (target < 2%)")
    for p in sorted(set(post)):
        print(f"  {p:10s} {flagged[post == p].mean():6.2%} of {int((post == p).sum())}")
    print("  by rule:", dict(Counter(r for r, e in ex.items() for _ in range(int((e > 0).sum())))))

    rng = np.random.default_rng(args.seed + 7)
    for kind in ("order", "bend", "displace"):
        bad, fb = plausible_sample(args.images // 3, args.seed + {"order": 1, "bend": 2, "displace": 3}[kind],
                                   noise=0.1)
        applies = corrupt_spines(bad, kind, rng)
        exb = rules.excess(rules.features(bad, fb.noise), t)  # every chain corrupted: the clean noise level
        hit = np.sum(list(exb.values()), axis=0) > 0
        print(f"detected {kind:8s} {hit[applies].mean():6.2%} of {int(applies.sum())} (target >= 95%)")

    # the deep fit, on plausible and on bent annotations of people of every build
    from spinetrack_tools.biomech.fit import DEEP_SPINE_RESIDUAL, PoseFitter, spine_residual, unexplained

    fitter = PoseFitter()
    chain = ds.skeleton.spine_chain
    for label in ("plausible", "bent"):
        sample, _ = plausible_sample(args.deep, args.seed + 11, noise=0.05)
        noise = BodyGeometry(sample).noise
        if label == "bent":
            corrupt_spines(sample, "bend", rng)
        g = BodyGeometry(sample)
        rows = np.flatnonzero((sample.keypoints[:, chain, 2] > 0).all(axis=1))[:args.deep]
        t0 = time.perf_counter()
        fits = fitter.fit_batch(sample.keypoints[rows], g.stature[rows])
        per = (time.perf_counter() - t0) / max(len(rows), 1)
        spine = spine_residual(unexplained(sample, rows, fits.residuals, noise), chain)
        print(f"deep fit, {label:9s}: {per:.2f} s per annotation (batched); spine residual beyond the noise median "
              f"{np.median(spine):.3f}, max {spine.max():.3f} torso lengths; above the bound {DEEP_SPINE_RESIDUAL}: "
              f"{(spine > DEEP_SPINE_RESIDUAL).mean():.0%} of {len(rows)}")

    # speed on ~60k annotations
    big, _ = plausible_sample(args.speed_annotations // 2, args.seed + 9, noise=0.1)
    t0 = time.perf_counter()
    rules.check(big, t)
    dt = time.perf_counter() - t0
    print(f"fast path: {len(big)} annotations in {dt:.2f} s ({len(big) / dt:,.0f}/s; target 60k in < 30 s)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        save_coco(path, big)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "validate-biomech", str(path), "--report",
                            str(Path(tmp) / "r.json")], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"from pycocotools.coco import COCO; COCO({str(path)!r})"],
                       capture_output=True, check=True)
        ref = time.perf_counter() - t0
    print(f"`spinetrack validate-biomech FILE` on those annotations: {wall:.2f} s end to end (exit "
          f"{r.returncode}), next to {ref:.2f} s for pycocotools to load the same file")


if __name__ == "__main__":
    main()
