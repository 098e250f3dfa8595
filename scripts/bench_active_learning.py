#!/usr/bin/env python3
"""Benchmark: active-learning strategies against random selection on synthetic data.

Same pool, same initial labelled set, same seed, same batch size and rounds for every strategy; the
selected images' true labels stand in for the annotators (no Label Studio), the reference trainer
fine-tunes from the previous round, and the validation set (unseen images) gives OKS AP after every
round. Prints AP per round per strategy and, for each strategy, the labelled images it needed to reach
random's final overall AP (interpolated) against random's count: the saving (target: >= 25% for the
default, hybrid).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from spinetrack_tools import synth
from spinetrack_tools.active_learning.rounds import run_round
from spinetrack_tools.active_learning.workspace import init
from spinetrack_tools.coco import save_coco

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=300)
    ap.add_argument("--labelled", type=int, default=30)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--strategies", default="random,least_confidence,hybrid")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    retrain = ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} --val-images "
               "{val_images} --init {init} --out {out} --lr 1e-3 --epochs " + str(args.epochs))
    curves: dict[str, list[tuple[int, float, dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pool = synth.generate(args.pool + args.labelled, seed=args.seed + 7, image_dir=tmp / "images")
        save_coco(tmp / "truth.json", pool)
        lab = {im["id"] for im in pool["images"][:args.labelled]}
        save_coco(tmp / "labeled.json", {**pool, "images": [i for i in pool["images"] if i["id"] in lab],
                                         "annotations": [a for a in pool["annotations"] if a["image_id"] in lab]})
        save_coco(tmp / "val.json", synth.generate(args.val, seed=args.seed + 8, image_dir=tmp / "val_images"))
        for name in args.strategies.split(","):
            ws = init(tmp / f"ws-{name}", tmp / "images", tmp / "truth.json", tmp / "labeled.json", tmp / "val.json",
                      ROOT / "models" / "spinetrack_synth.onnx", ROOT / "models" / "spinetrack_synth.pt",
                      tmp / "val_images", name, args.batch, retrain=retrain, seed=args.seed)
            for n in range(1, args.rounds + 1):
                run_round(ws, n, oracle=pool, echo=lambda s: print("  " + s, file=sys.stderr))
            with ws.db() as db:
                rows = db.execute("SELECT round, grp, ap, labelled_images FROM metrics ORDER BY round").fetchall()
            per_round: dict[int, dict] = {}
            for r in rows:
                per_round.setdefault(r["round"], {"n": r["labelled_images"]})[r["grp"]] = r["ap"]
            curves[name] = [(v["n"], v["overall"], v) for _, v in sorted(per_round.items())]
            print(f"{name}: " + "  ".join(f"{n} imgs AP {ap_:.3f} (spine {v['spine']:.3f})"
                                          for n, ap_, v in curves[name]), flush=True)
    if "random" in curves:
        target_n, target_ap, _ = curves["random"][-1]
        print(f"random's final overall AP {target_ap:.3f} with {target_n} labelled images")
        start_ap = curves["random"][0][1]
        if target_ap <= start_ap:
            print(f"  random's final AP is not above the starting model's ({start_ap:.3f}): the rounds did not help "
                  "on this data, so no saving can be measured")
            return
        for name, c in curves.items():
            ns = np.array([x[0] for x in c], float)
            aps = np.array([x[1] for x in c])
            reached = np.flatnonzero(aps >= target_ap)
            reached = reached[reached > 0]  # the shared starting point does not count
            if not len(reached):
                print(f"  {name}: does not reach it within the budget (best {aps.max():.3f})")
                continue
            i = reached[0]
            need = ns[i] if i == 0 else ns[i - 1] + (target_ap - aps[i - 1]) / (aps[i] - aps[i - 1]) * (ns[i] - ns[i - 1])
            print(f"  {name}: reaches it with {need:.0f} labelled images, saving {1 - need / target_n:.0%}")


if __name__ == "__main__":
    main()
