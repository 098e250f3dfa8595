#!/usr/bin/env python3
"""Benchmark: `spinetrack predict` end to end (JPEG decode + crop + inference + decode) against the bare
`InferenceSession.run` time for the same batches.

Renders synthetic images (1-3 persons each), exports a SimCC model of SpinePose-s-like cost with the
reference trainer's architecture (random weights; needs the torch extra) unless --model is given, then
times, interleaved and repeated: (a) `predict` on the images' ground-truth boxes; (b) only
`session.run` over the very batches (a) feeds the network, prepared beforehand. Target: (a) / (b) <= 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from spinetrack_tools import synth
from spinetrack_tools.persons import Persons
from spinetrack_tools.inference import transforms as T
from spinetrack_tools.inference.model import PoseModel
from spinetrack_tools.inference.predict import _read, jobs_from_coco, predict


def scene(tmp: Path, images: int, model_path: Path | None, width: float,
          threads: int) -> tuple[PoseModel, list, int]:
    """Rendered images in ``tmp`` with their boxes as predict jobs, and the model (``model_path``, or a
    reference-architecture export of ``width``, random weights): (model, jobs, persons). Shared with
    bench_ray_predict.py."""
    coco = synth.generate(images, seed=1, image_dir=tmp / "images", fk="numpy")
    path = model_path
    if path is None:
        import torch

        from spinetrack_tools.train.model import ModelConfig, SimCCNet, export_onnx

        torch.manual_seed(0)
        net = SimCCNet(ModelConfig(width=width, depth=2))
        path = tmp / "model.onnx"
        export_onnx(net, str(path))
        print(f"model: reference architecture, width {width}: "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters")
    model = PoseModel.load(path, threads)
    jobs = jobs_from_coco(Persons.from_coco(coco), tmp / "images")
    return model, jobs, sum(len(j.boxes) for _, j in jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", type=Path, help="an ONNX pose model (default: export a SpinePose-s-sized one)")
    ap.add_argument("--width", type=float, default=3.0, help="width of the exported model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, jobs, n_persons = scene(Path(tmp), args.images, args.model, args.width, args.threads)
        # the batches predict builds: crops of consecutive images, cut at batch_size or more
        batches, pending = [], []
        for p, job in jobs:
            img = _read(p)
            c, s = T.box_center_scale(job.boxes, model.input_wh)
            pending += [T.crop(img, ci, si, model.input_wh) for ci, si in zip(c, s)]
            if len(pending) >= args.batch_size:
                batches.append(T.normalize(np.stack(pending), layout=model.layout))
                pending = []
        if pending:
            batches.append(T.normalize(np.stack(pending), layout=model.layout))
        predict(model, jobs[:3], batch_size=args.batch_size)  # warm-up
        t_e2e, t_run = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            predict(model, jobs, batch_size=args.batch_size)
            t_e2e.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for x in batches:
                model.run(x)
            t_run.append(time.perf_counter() - t0)
    e2e, run = statistics.median(t_e2e), statistics.median(t_run)
    print(f"{len(jobs)} images, {n_persons} persons, batch {args.batch_size}, {args.threads} onnxruntime threads")
    print(f"bare InferenceSession.run: {run:.2f} s ({n_persons / run:.0f} persons/s)")
    print(f"spinetrack predict end to end: {e2e:.2f} s ({n_persons / e2e:.0f} persons/s)")
    print(f"ratio {e2e / run:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
