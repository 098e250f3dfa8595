#!/usr/bin/env python3
"""Reproduce models/spinetrack_synth.onnx: render a synthetic training and a held-out validation set with
`spinetrack synth`, train the reference model on it, and copy the ONNX export and its metrics.

    python scripts/train_shipped_model.py [--work DIR]   # about 25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from spinetrack_tools import synth
from spinetrack_tools.coco import save_coco
from spinetrack_tools.train.model import ModelConfig
from spinetrack_tools.train.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("shipped-model-work"))
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=14)
    args = ap.parse_args()
    for split, n, seed in (("train", args.train_images, 100), ("val", args.val_images, 200)):
        save_coco(args.work / split / "annotations.json",
                  synth.generate(n, seed=seed, image_dir=args.work / split / "images"))
    train(args.work / "train" / "annotations.json", args.work / "train" / "images",
          args.work / "val" / "annotations.json", args.work / "val" / "images", args.work / "run",
          TrainConfig(epochs=args.epochs, batch_size=32, lr=3e-3), ModelConfig(width=0.75))
    (ROOT / "models").mkdir(exist_ok=True)
    shutil.copy(args.work / "run" / "model.onnx", ROOT / "models" / "spinetrack_synth.onnx")
    shutil.copy(args.work / "run" / "metrics.json", ROOT / "models" / "spinetrack_synth.metrics.json")


if __name__ == "__main__":
    main()
