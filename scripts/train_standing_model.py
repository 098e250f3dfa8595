#!/usr/bin/env python3
"""Reproduce models/spinetrack_standing.{onnx,pt}: the starting model of the quickstart and of
scripts/bench_active_learning.py, the shipped model (models/spinetrack_synth.pt, all postures) fine-tuned on
synthetic people standing only (600 images, 3 epochs at lr 3e-3), so that it forgets part of sitting and
bending and a pool which adds them has something to teach it. (Training one from scratch on standing people
takes about an hour on the loaded 2-core machine; bench_active_learning.py --train-source does that.)

    python scripts/train_standing_model.py [--work DIR]   # about 10-15 minutes on 2 loaded cores
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from spinetrack_tools.quickstart import CHECKPOINT, SOURCE_EPOCHS, SOURCE_IMAGES, STANDING, train_source_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("standing-model-work"))
    ap.add_argument("--images", type=int, default=SOURCE_IMAGES)
    ap.add_argument("--epochs", type=int, default=SOURCE_EPOCHS)
    args = ap.parse_args()
    run = train_source_model(args.work, args.images, args.epochs, init=CHECKPOINT)
    STANDING.parent.mkdir(exist_ok=True)
    for src, suffix in (("model.onnx", ".onnx"), ("model.pt", ".pt"), ("metrics.json", ".metrics.json")):
        shutil.copy(run / src, STANDING.with_name(STANDING.name + suffix))
    print(f"wrote {STANDING}.onnx, .pt, .metrics.json")


if __name__ == "__main__":
    main()
