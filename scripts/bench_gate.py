#!/usr/bin/env python3
"""Benchmark of the active-learning gate's two-stage biomechanical check (``active_learning.gate.two_stage``).

Prints, measured in one run, the fast rules alone next to the two stages (fast rules flag, the deep fit of
the OpenSim model with the person's build confirms):
- false rejections: the share of plausible synthetic annotations (the whole range of motion, every posture,
  random perspective cameras, people of every build, annotation noise of 0.1 x the annotators' spread (the
  SpineTrack sigmas x sqrt(area)), a seed the calibration never saw) that the gate
  would reject, per posture (target <= 0.2% two-stage);
- recall: spine chains with two points swapped, bent or displaced by 20-40% of the torso length (target
  >= 95% each, two-stage);
- the quickstart's case: images whose labels are the true synthetic keypoints (no noise) rejected;
- the deep fit's time per flagged annotation, and, for information, false rejections at noise 0.25 and 0.5.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spinetrack_tools import synth
from spinetrack_tools.active_learning.gate import two_stage
from spinetrack_tools.biomech.calibrate import corrupt_spines, plausible_sample
from spinetrack_tools.biomech.fit import DEEP_NOISE_K, DEEP_SPINE_RESIDUAL
from spinetrack_tools.biomech.geometry import BodyGeometry
from spinetrack_tools.biomech.rules import Thresholds, check
from spinetrack_tools.persons import Persons


def rejected(ds: Persons, deep: bool, t: Thresholds, noise: float | None = None) -> tuple[np.ndarray, float, int]:
    """[N] annotations with an error after the fast rules (or both stages), seconds, annotations fitted.
    ``noise``: the annotation noise level (default: measured on ``ds``)."""
    t0 = time.perf_counter()
    report = two_stage(ds, thresholds=t, noise=noise) if deep else check(ds, t, noise)
    dt = time.perf_counter() - t0
    bad = {(f.image_id, f.annotation_id) for f in report.findings if f.severity == "error"}
    mask = np.array([(int(i), int(a)) in bad for i, a in zip(ds.image_ids, ds.ann_ids)])
    return mask, dt, int(report.stats.get("deep_fitted_annotations", 0))


def side_by_side(label: str, ds: Persons, t: Thresholds, rows: np.ndarray | None = None,
                 noise: float | None = None) -> tuple[float, float]:
    fast, _, _ = rejected(ds, False, t, noise)
    deep, dt, fitted = rejected(ds, True, t, noise)
    rows = np.ones(len(ds), bool) if rows is None else rows
    f, d = fast[rows].mean(), deep[rows].mean()
    print(f"  {label:34s} fast only {f:7.2%}   two-stage {d:7.2%}   ({int(rows.sum())} annotations; "
          f"{fitted} fitted, {dt / max(fitted, 1):.2f} s each)")
    return f, d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000, help="plausible synthetic images (1-3 persons each)")
    ap.add_argument("--corrupt-images", type=int, default=300, help="images per corruption kind")
    ap.add_argument("--quickstart-images", type=int, default=500, help="images with the true synthetic keypoints")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--noise", type=float, default=0.1, help="annotation noise, x sigma_k x sqrt(area)")
    args = ap.parse_args()
    t = Thresholds.load()
    print(f"thresholds: calibration seed {t.meta.get('seed')}, this run's seed {args.seed}; deep bound "
          f"{DEEP_SPINE_RESIDUAL} torso lengths at the finding's keypoints beyond {DEEP_NOISE_K} x the noise")

    print("false rejections of plausible annotations (target <= 0.20% two-stage):")
    ds, _ = plausible_sample(args.images, args.seed, noise=args.noise)
    fast, _, _ = rejected(ds, False, t)
    deep, dt, fitted = rejected(ds, True, t)
    post = ds.attrs["posture"].astype(str)
    ratio = deep.mean() / max(fast.mean(), 1e-9)
    print(f"  {'all postures':34s} fast only {fast.mean():7.2%}   two-stage {deep.mean():7.2%}   ({len(ds)} "
          f"annotations; {fitted} fitted, {dt / max(fitted, 1):.2f} s each; two-stage / fast {ratio:.2f})")
    for p in sorted(set(post)):
        m = post == p
        print(f"    {p:32s} fast only {fast[m].mean():7.2%}   two-stage {deep[m].mean():7.2%}   ({int(m.sum())})")

    print("recall on corrupted spines (target >= 95% two-stage):")
    rng = np.random.default_rng(args.seed + 7)
    for kind in ("order", "bend", "displace"):
        bad, _ = plausible_sample(args.corrupt_images, args.seed + {"order": 1, "bend": 2, "displace": 3}[kind],
                                  noise=args.noise)
        # a file of corrupted spines only would read the corruption as noise: the level measured before
        noise = BodyGeometry(bad).noise
        applies = corrupt_spines(bad, kind, rng)
        side_by_side(f"{kind}", bad, t, applies, noise)

    print("the quickstart's case: the true synthetic keypoints, no noise (images with a rejected person):")
    truth = Persons.from_coco(synth.generate(args.quickstart_images, seed=args.seed + 20, fk="numpy"))
    fast, _, _ = rejected(truth, False, t)
    deep, dt, fitted = rejected(truth, True, t)
    imgs = np.unique(truth.image_ids)
    per_image = lambda m: np.isin(imgs, truth.image_ids[m]).mean()  # noqa: E731
    print(f"  {'images rejected':34s} fast only {per_image(fast):7.2%}   two-stage {per_image(deep):7.2%}   "
          f"({len(imgs)} images, {len(truth)} annotations; {fitted} fitted)")

    print("for information, plausible annotations with more annotation noise:")
    for k, noise in enumerate((0.25, 0.5)):
        noisy, _ = plausible_sample(args.images // 3, args.seed + 30 + k, noise=noise)
        side_by_side(f"false rejections at noise {noise}", noisy, t)


if __name__ == "__main__":
    main()
