#!/usr/bin/env python3
"""Benchmark: `spinetrack flag` and `spinetrack validate-biomech` (fast path) on plausible people from a generator
written independently of the toolkit's model (tests/posegen.py: its own code, Drillis & Contini proportions, its
own spine curve and placement of the spine points, perspective cameras), with corruptions injected.

Prints, for each generator setting and annotation noise level (x sigma_k x sqrt(area) per coordinate):
- false alarms: the share of plausible annotations with an error finding, per posture, for both commands
  (target <= 2% each);
- recall of validate-biomech on spine points out of order, spine chains bent and displaced (target >= 95%) and of
  flag on each corruption kind of `spinetrack synth --corrupt` (target: no worse than before);
- with --curves, each biomechanical rule's trade-off: false alarms and recall when its bound is moved by a factor
  (1 = the shipped bound).
Run with PYTHONPATH set to another checkout to measure that version on the same data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/posegen.py (after PYTHONPATH)
from spinetrack_tools import synth  # noqa: E402
from spinetrack_tools.biomech import rules  # noqa: E402
from spinetrack_tools.biomech.calibrate import corrupt_spines  # noqa: E402
from spinetrack_tools.persons import Persons  # noqa: E402
from spinetrack_tools.quality import flag  # noqa: E402
from tests import posegen  # noqa: E402

SPINE_KINDS = ("order", "bend", "displace")
SETTINGS = {  # name -> posegen keyword arguments
    "posegen": {},
    "posegen-wide": {"vary": 0.12, "depth": (0.0, 0.09)},  # more varied builds, spine points deeper and shallower
}


def flagged(persons: Persons, report) -> np.ndarray:
    return np.isin(persons.ann_ids, list(report.flagged_annotation_ids("error")))


def per_posture(mask: np.ndarray, posture: np.ndarray) -> str:
    return "  ".join(f"{p} {mask[posture == p].mean():5.1%}" for p in posegen.POSTURES)


def corrupted(p: Persons, kind: str, seed: int, fraction: float = 0.2) -> tuple[Persons, np.ndarray]:
    """A copy of ``p`` with a ``fraction`` of its persons' spines corrupted (the rest as they were), and which."""
    rng = np.random.default_rng(seed)
    q = p.select(np.arange(len(p)))
    applies = corrupt_spines(q, kind, rng) & (rng.random(len(p)) < fraction)
    q.keypoints[~applies] = p.keypoints[~applies]
    return q, applies


def spine_recall(p: Persons, seed: int) -> dict[str, float]:
    out = {}
    for i, kind in enumerate(SPINE_KINDS):
        q, applies = corrupted(p, kind, seed + i)
        out[kind] = float(flagged(q, rules.check(q))[applies].mean())
    return out


def flag_recall(coco: dict, seed: int) -> dict[str, float]:
    bad, truth = synth.corrupt(coco, 0.3, seed=seed)
    p = Persons.from_coco(bad)
    hit = set(flag(p).flagged_annotation_ids("error"))
    kinds: dict[str, list[bool]] = {}
    for t in truth:
        kinds.setdefault(t["kind"], []).append(t["annotation_id"] in hit)
    return {k: float(np.mean(v)) for k, v in sorted(kinds.items())}


def curves(p: Persons, seed: int, factors: tuple[float, ...]) -> None:
    """False alarms and recall per rule when its bound's distance from the typical value is scaled."""
    t = rules.Thresholds.load()
    f0 = rules.features(p)
    bad = []
    for i, kind in enumerate(SPINE_KINDS):
        q, applies = corrupted(p, kind, seed + i)
        bad.append((rules.features(q), applies))
    print("  rule trade-off (bound moved by a factor; 1 = shipped): false alarms / recall on the three spine kinds")
    for rule, (kind, _) in rules.RULES.items():
        if rule == "segment_length" or rule not in t.rules:
            continue
        row = []
        for k in factors:
            def hits(f: rules.Features) -> np.ndarray:
                v, b = f.values[rule], t.bound(rule, f)
                mid = np.nanmedian(f0.values[rule])
                lim = mid + k * (b - mid)
                return (v > lim) if kind == "upper" else (v < lim)
            fa = float(np.mean(hits(f0)))
            rec = float(np.mean(np.concatenate([hits(f)[a] for f, a in bad])))
            row.append(f"x{k:g} {fa:5.1%}/{rec:5.1%}")
        print(f"    {rule:17s} " + "  ".join(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="images per setting and noise level (1-2 persons)")
    ap.add_argument("--noise", default="0.1,0.25", help="annotation noise levels, comma-separated")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"generator settings ({', '.join(SETTINGS)})")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--curves", action="store_true", help="also print each rule's trade-off curve")
    args = ap.parse_args()
    t0 = time.perf_counter()
    for name in args.settings.split(","):
        for noise in (float(x) for x in args.noise.split(",")):
            coco = posegen.generate(args.images, seed=args.seed, noise=noise, **SETTINGS[name])
            p = Persons.from_coco(coco, attrs=("posture",))
            posture = p.attrs["posture"].astype(str)
            bio, fl = flagged(p, rules.check(p)), flagged(p, flag(p))
            print(f"{name}, noise {noise:g}: {len(p)} plausible annotations")
            print(f"  false alarms validate-biomech {bio.mean():5.1%}: {per_posture(bio, posture)}")
            print(f"  false alarms flag             {fl.mean():5.1%}: {per_posture(fl, posture)}")
            rec = spine_recall(p, args.seed)
            print("  validate-biomech recall: " + ", ".join(f"{k} {v:5.1%}" for k, v in rec.items()))
            print("  flag recall: " + ", ".join(f"{k} {v:4.0%}" for k, v in flag_recall(coco, args.seed).items()))
            if args.curves:
                curves(p, args.seed, (0.5, 0.75, 1.0, 1.5, 2.0))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
