#!/usr/bin/env python3
"""Benchmark: push and pull of 5,000 tasks (37 keypoints, 1-3 persons, with predictions) against a local
Label Studio started for the run, on SQLite and on PostgreSQL (a private server, as `labelstudio start
--postgres` runs it). Prints tasks/s for each back end side by side (target: every figure >= 200 tasks/s).

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
from spinetrack_tools.labelstudio import postgres, server
from spinetrack_tools.labelstudio.client import connect, image_url, pull, push
from spinetrack_tools.labelstudio.convert import to_labelstudio
from spinetrack_tools.persons import Persons

TARGET = 200.0


def measure(backend: str, coco: dict, tmp: Path) -> dict[str, float]:
    """Start Label Studio on ``backend`` in ``tmp``, push the tasks, pull them annotated; tasks/s of each."""
    root, images = tmp / "root", tmp / "root" / "images"
    images.mkdir(parents=True)
    t0 = time.perf_counter()
    info = server.start(tmp / "ls", root, postgres=backend == "postgres")
    print(f"[{backend}] Label Studio started in {time.perf_counter() - t0:.0f} s at {info.url} ({info.database})")
    try:
        conn, _ = connect(server_dir=tmp / "ls")  # as the toolkit connects to its own server
        tasks = to_labelstudio(Persons.from_coco(coco), image_url=image_url(root, images), model_version="bench")
        t0 = time.perf_counter()
        res = push(conn, "bench-push", tasks, images, root, "bench")
        dt_push = time.perf_counter() - t0
        print(f"[{backend}] push: {len(res.created)} tasks in {dt_push:.1f} s")
        annotated = copy.deepcopy(tasks)
        for t in annotated:
            t["annotations"] = [{"result": t["predictions"][0]["result"]}]
        push(conn, "bench-pull", annotated, images, root, "bench")
        t0 = time.perf_counter()
        out = pull(conn, "bench-pull")
        dt_pull = time.perf_counter() - t0
        print(f"[{backend}] pull: {out.tasks} annotated tasks -> {len(out.persons)} persons in {dt_pull:.1f} s")
        return {"push": len(res.created) / dt_push, "pull": out.tasks / dt_pull}
    finally:
        server.stop(tmp / "ls")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = ap.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and postgres.binaries() is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql); run with --backend sqlite")
    coco = synth.generate(args.tasks, seed=0, fk="numpy")  # keypoints only: the image files are not read
    n_kp = sum(len(a["keypoints"]) // 3 for a in coco["annotations"])
    print(f"{args.tasks} tasks, {len(coco['annotations'])} persons, {n_kp} keypoints")
    figures = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"bench-ls-{backend}-") as tmp:
            Path(tmp).chmod(0o711)  # under root, PostgreSQL runs as another user, who must traverse it
            figures[backend] = measure(backend, coco, Path(tmp))
    print(f"\n{'tasks/s':8}" + "".join(f"{b:>10}" for b in backends) +
          (f"{'pg/sqlite':>11}" if len(backends) == 2 else "") + f"{'target':>8}")
    for op in ("push", "pull"):
        row = [figures[b][op] for b in backends]
        ratio = f"{row[1] / row[0]:>11.2f}" if len(row) == 2 else ""
        ok = "ok" if min(row) >= TARGET else "BELOW"
        print(f"{op:8}" + "".join(f"{v:>10.0f}" for v in row) + ratio + f"{'>=' + str(int(TARGET)):>8} {ok}")


if __name__ == "__main__":
    main()
