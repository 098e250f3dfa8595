#!/usr/bin/env python3
"""Benchmark: push and pull of 5,000 tasks (37 keypoints, 1-3 persons, with predictions) against a local
Label Studio started for the run. Prints tasks/s for each (target: both >= 200 tasks/s).

Pull is measured on annotated tasks: every task gets an annotation first (through the bulk import,
which is not timed), then the whole project is pulled and converted to COCO.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from spinetrack_tools import synth
from spinetrack_tools.labelstudio import server
from spinetrack_tools.labelstudio.client import Connection, image_url, pull, push
from spinetrack_tools.labelstudio.convert import to_labelstudio
from spinetrack_tools.persons import Persons


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, images = tmp / "root", tmp / "root" / "images"
        images.mkdir(parents=True)
        coco = synth.generate(args.tasks, seed=0, fk="numpy")  # keypoints only: the image files are not read
        t0 = time.perf_counter()
        info = server.start(tmp / "ls", root)
        print(f"Label Studio started in {time.perf_counter() - t0:.0f} s at {info.url}")
        try:
            conn = Connection.open(info.url, info.token)
            tasks = to_labelstudio(Persons.from_coco(coco), image_url=image_url(root, images), model_version="bench")
            n_kp = sum(len(t["predictions"][0]["result"]) for t in tasks)
            t0 = time.perf_counter()
            res = push(conn, "bench-push", tasks, images, root, "bench")
            dt_push = time.perf_counter() - t0
            print(f"push: {len(res.created)} tasks ({n_kp} regions) in {dt_push:.1f} s = "
                  f"{len(res.created) / dt_push:.0f} tasks/s (target >= 200)")
            annotated = copy.deepcopy(tasks)
            for t in annotated:
                t["annotations"] = [{"result": t["predictions"][0]["result"]}]
            push(conn, "bench-pull", annotated, images, root, "bench")
            t0 = time.perf_counter()
            out = pull(conn, "bench-pull")
            dt_pull = time.perf_counter() - t0
            print(f"pull: {out.tasks} annotated tasks -> {len(out.persons)} persons in {dt_pull:.1f} s = "
                  f"{out.tasks / dt_pull:.0f} tasks/s (target >= 200)")
        finally:
            server.stop(tmp / "ls")


if __name__ == "__main__":
    main()
