#!/usr/bin/env python3
"""Benchmark: `predict` on Ray Data (a local cluster of --cpus CPUs) against the in-process path, on one box.

Renders synthetic images (1-3 persons each), exports a SimCC model of SpinePose-s-like cost with the
reference trainer's architecture (random weights; needs the torch extra) unless --model is given, starts
Ray once (its start-up is printed, not counted), then times, interleaved and repeated: (a) `predict`
in this process; (b) `distributed.predict_ray` (actor start-up, model load, reading, cropping and
inference in the actors, results back in order) and checks that both give identical predictions.
Target: (b) / (a) <= 1.15. Ray runs predict_ray's default (one single-threaded actor per CPU) unless
--actor-threads/--actors say otherwise; the in-process path runs --threads threads. Each Ray predict starts
its actors afresh (Ray Data's actor pool lives for one dataset, and Ray starts a new process for every actor):
that fixed cost is printed too (a Ray predict of 3 images), and it is what the ratio pays on a small job.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the in-process path")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--actor-threads", type=int, help="onnxruntime threads per Ray actor (default: predict_ray's, 1)")
    ap.add_argument("--actors", type=int, help="Ray actors (default: cpus // actor threads)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", type=Path, help="an ONNX pose model (default: export a SpinePose-s-sized one)")
    ap.add_argument("--width", type=float, default=3.0, help="width of the exported model")
    args = ap.parse_args()

    import ray

    from bench_predict import scene  # this folder's benchmark of the in-process path: the same scene
    from spinetrack_tools.inference.distributed import predict_ray
    from spinetrack_tools.inference.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        model, jobs, n_persons = scene(Path(tmp), args.images, args.model, args.width, args.threads)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="warning")
        t_init = time.perf_counter() - t0
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            predict(model, jobs[:3], batch_size=args.batch_size)  # warm-up
            on_ray = dict(batch_size=args.batch_size, actors=args.actors, threads=args.actor_threads)
            predict_ray(model, jobs[:3], **on_ray)  # Ray's workers warm
            t0 = time.perf_counter()
            predict_ray(model, jobs[:3], **on_ray)
            t_fixed = time.perf_counter() - t0
            t_local, t_ray = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                a = predict(model, jobs, batch_size=args.batch_size)
                t_local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b = predict_ray(model, jobs, **on_ray)
                t_ray.append(time.perf_counter() - t0)
                assert np.array_equal(a.keypoints, b.keypoints) and a.to_results() == b.to_results(), "differ"
        finally:
            ray.shutdown()
    local, remote = statistics.median(t_local), statistics.median(t_ray)
    actor_threads = args.actor_threads or 1  # predict_ray's default: the local cluster has no GPUs
    actors = args.actors or max(1, args.cpus // actor_threads)
    print(f"{len(jobs)} images, {n_persons} persons, batch {args.batch_size}; in-process: {args.threads} onnxruntime "
          f"threads; Ray: {args.cpus} CPUs, {actors} actor(s) of {actor_threads} thread(s); predictions identical "
          f"in all {args.repeat} runs")
    print(f"ray.init (once, not counted): {t_init:.1f} s; a Ray predict of 3 images (actor start-up, model load): "
          f"{t_fixed:.2f} s")
    print(f"in-process predict: {local:.2f} s ({n_persons / local:.0f} persons/s)  runs {_fmt(t_local)}")
    print(f"Ray predict:        {remote:.2f} s ({n_persons / remote:.0f} persons/s)  runs {_fmt(t_ray)}")
    print(f"ratio {remote / local:.2f} (target <= 1.15)")


def _fmt(ts: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in ts)


if __name__ == "__main__":
    main()
