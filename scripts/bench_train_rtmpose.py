#!/usr/bin/env python3
"""Benchmark: training speed of the released-model path (an RTMPose-s / SpinePose-small ONNX, 256 x 192, 37
keypoints, loaded by ``train.onnx_import`` and fine-tuned by the trainer) next to the reference SimCCNet
(``spinetrack train``'s default width 0.75), on the same synthetic persons, same batch size and threads.

Prints seconds per epoch per 1,000 persons (the training loop: crops, augmentation, forward, backward,
AdamW step; not the per-epoch export and validation) for both, side by side, and the ratio. The RTMPose-s
is a random-weight stand-in exported as torch's exporter does (speed does not depend on the weights).
Each model trains ``--epochs`` epochs on ``--persons`` persons; the first epoch is a warm-up and not counted
when there are two or more.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from spinetrack_tools import synth
from spinetrack_tools.coco import read_persons
from spinetrack_tools.io import save_json
from spinetrack_tools.train.model import ModelConfig, export_onnx
from spinetrack_tools.train.rtmpose import RTMPose, RTMPoseConfig, randomize_
from spinetrack_tools.train.trainer import TrainConfig, load_checkpoint, load_samples, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=64, help="training persons per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        train_set = synth.generate(max(2, args.persons // 2 + 2), seed=1, image_dir=d / "images", fk="numpy")
        save_json(d / "train.json", train_set)
        save_json(d / "val.json", synth.generate(2, seed=2, image_dir=d / "val_images", fk="numpy"))
        torch.manual_seed(0)
        export_onnx(randomize_(RTMPose(RTMPoseConfig.named("s", folded=False))), str(d / "rtmpose-s.onnx"))
        tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, threads=args.threads,
                           max_samples=args.persons)
        persons = min(args.persons, len(load_samples(read_persons(d / "train.json"), d / "images")))
        rows = []
        for name, kw in (("reference SimCCNet (width 0.75)", {"mcfg": ModelConfig(width=0.75)}),
                         ("RTMPose-s from ONNX", {"init": d / "rtmpose-s.onnx"})):
            out = d / name.split()[0]
            train(d / "train.json", d / "images", d / "val.json", d / "val_images", out, tcfg, log=lambda s: None,
                  **kw)
            hist = json.loads((out / "metrics.json").read_text())["history"]
            timed = hist[1:] if len(hist) > 1 else hist
            per_1000 = sum(h["seconds"] for h in timed) / len(timed) / persons * 1000
            params = sum(p.numel() for p in load_checkpoint(out / "model.pt")[0].parameters()) / 1e6
            rows.append((name, params, per_1000, [round(h["loss"], 3) for h in hist]))
    print(f"{persons} persons, {args.threads} threads, batch {args.batch_size}, {args.epochs} epochs "
          "(the first a warm-up when there are two or more)")
    print(f"{'model':34s} {'params M':>9s} {'s/epoch/1000 persons':>21s}  loss per epoch")
    for name, params, per_1000, losses in rows:
        print(f"{name:34s} {params:9.2f} {per_1000:21.1f}  {losses}")
    print(f"ratio RTMPose-s / reference: {rows[1][2] / rows[0][2]:.1f}x")


if __name__ == "__main__":
    main()
