#!/usr/bin/env python3
"""Benchmark: `spinetrack validate` + `spinetrack flag` on a SpineTrack-sized file, next to pycocotools.

Writes a synthetic file of about 60k annotations (with segmentation polygons, as COCO files carry, to
reach SpineTrack's size), then runs, each in a fresh process and interleaved `--repeat` times:
  - the reference: `pycocotools.coco.COCO(path)` (json.load + index);
  - `spinetrack validate FILE --report ...` and `spinetrack flag FILE --report ...`.
Prints median wall time and peak memory (max RSS) of each, and the ratio
(validate + flag) / pycocotools load. Target: ratio <= 3, peak memory < 2 GB per command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spinetrack_tools import synth
from spinetrack_tools.coco import save_coco


def make_file(path: Path, annotations: int, seed: int = 0) -> None:
    data = synth.generate(max(1, annotations // 2), seed=seed, persons_per_image=(1, 3))
    data, _ = synth.corrupt(data, fraction=0.02, seed=seed + 1)
    rng = np.random.default_rng(seed)
    for a in data["annotations"]:  # a 48-vertex polygon around the box, as COCO segmentations look
        x, y, w, h = a["bbox"]
        ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = rng.uniform(0.8, 1.0, 48)
        poly = np.stack([x + w / 2 + np.cos(ang) * r * w / 2, y + h / 2 + np.sin(ang) * r * h / 2], 1)
        a["segmentation"] = [poly.ravel().tolist()]
    save_coco(path, data)


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed with {code}: {proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=int, default=60000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--file", type=Path, help="use this file instead of generating one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "person_keypoints_bench.json"
        if args.file is None:
            t = time.perf_counter()
            make_file(path, args.annotations)
            print(f"generated {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        py = sys.executable
        cmds = {
            "pycocotools COCO() load": [py, "-c", f"from pycocotools.coco import COCO; COCO({str(path)!r})"],
            "spinetrack validate": [py, "-m", "spinetrack_tools", "validate", str(path), "--report",
                                    str(Path(tmp) / "v.json")],
            "spinetrack flag": [py, "-m", "spinetrack_tools", "flag", str(path), "--report", str(Path(tmp) / "f.json")],
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(args.repeat):
            for name, cmd in cmds.items():
                results[name].append(run(cmd))
        size = path.stat().st_size / 1e6

    med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    peak = {k: max(m for _, m in v) for k, v in results.items()}
    print(f"file: {size:.0f} MB, {args.annotations} annotations (requested), {args.repeat} runs each, medians")
    print(f"{'command':28s} {'wall s':>8s} {'peak MB':>8s}")
    for k in cmds:
        print(f"{k:28s} {med[k]:8.2f} {peak[k]:8.0f}")
    ours = med["spinetrack validate"] + med["spinetrack flag"]
    ratio = ours / med["pycocotools COCO() load"]
    print(f"validate + flag = {ours:.2f} s = {ratio:.2f}x the pycocotools load (target <= 3x)")
    print(f"peak memory: validate {peak['spinetrack validate']:.0f} MB, flag {peak['spinetrack flag']:.0f} MB "
          f"(target < 2048 MB)")


if __name__ == "__main__":
    main()
