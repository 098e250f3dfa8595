#!/usr/bin/env python3
"""Benchmark: `spinetrack browse --no-launch` building a FiftyOne dataset of about 60k annotations (with
a prediction file and a flag report), in a private FiftyOne database. Target: under 2 minutes.

The images are not read by FiftyOne while building (sizes come from the COCO file), so the file names
need not exist on disk for this measurement.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spinetrack_tools import synth
from spinetrack_tools.coco import save_coco
from spinetrack_tools.persons import Persons
from spinetrack_tools.io import save_json
from spinetrack_tools.quality import flag


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=int, default=60000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        coco = synth.generate(args.annotations // 2, seed=0, fk="numpy")
        save_coco(tmp / "gt.json", coco)
        flag(Persons.from_coco(coco)).write_json(tmp / "flag.json")
        save_json(tmp / "pred.json", [{"image_id": a["image_id"], "category_id": 1, "annotation_id": a["id"],
                                       "score": 0.9, "keypoints": a["keypoints"]} for a in coco["annotations"]])
        env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp / "db"), "FIFTYONE_DO_NOT_TRACK": "true"}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "spinetrack_tools", "browse", str(tmp / "gt.json"), "--images",
                            str(tmp / "images"), "--pred", str(tmp / "pred.json"), "--report", str(tmp / "flag.json"),
                            "--name", "bench-browse", "--no-launch"], env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    print(r.stdout.strip().splitlines()[-1])
    print(f"{len(coco['annotations'])} annotations on {len(coco['images'])} images loaded in {dt:.0f} s "
          f"(target < 120 s)")


if __name__ == "__main__":
    main()
