#!/usr/bin/env python3
"""Reproduce models/spinetrack_standing.{onnx,pt}: the starting model of the quickstart and of
scripts/bench_active_learning.py, trained on synthetic people standing only (600 images, 5 epochs), so
that a pool which adds sitting and bending people has something to teach it.

    python scripts/train_standing_model.py [--work DIR]   # about 10-20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from spinetrack_tools.quickstart import SOURCE_EPOCHS, SOURCE_IMAGES, STANDING, train_source_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("standing-model-work"))
    ap.add_argument("--images", type=int, default=SOURCE_IMAGES)
    ap.add_argument("--epochs", type=int, default=SOURCE_EPOCHS)
    args = ap.parse_args()
    run = train_source_model(args.work, args.images, args.epochs)
    STANDING.parent.mkdir(exist_ok=True)
    for src, suffix in (("model.onnx", ".onnx"), ("model.pt", ".pt"), ("metrics.json", ".metrics.json")):
        shutil.copy(run / src, STANDING.with_name(STANDING.name + suffix))
    print(f"wrote {STANDING}.onnx, .pt, .metrics.json")


if __name__ == "__main__":
    main()
