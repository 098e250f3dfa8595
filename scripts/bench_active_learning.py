#!/usr/bin/env python3
"""Benchmark: active-learning strategies against random selection on synthetic data with a domain shift.

The starting model is trained on a source domain (people standing; trained once and kept in --work), as
body datasets are dominated by upright people. The unlabelled pool comes from a target domain where most
people stand again but a fifth sit or bend (the flexed spines SpineTrack is about); the validation set
has the three postures equally. The initial labelled set is source-domain images (kept in every
retraining, so the model does not forget them).

Same pool, same initial labelled set, same seed, same batch size and rounds for every strategy; the
selected images' true labels stand in for the annotators (no Label Studio), the reference trainer
fine-tunes from the previous round on everything labelled so far, and the validation set (unseen
images) gives OKS AP after every round. Prints AP per round per strategy and, for each strategy, the
labelled pool images it needed to reach random's final overall AP (interpolated) against random's count:
the saving (target: >= 25% for the default strategy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from spinetrack_tools import synth
from spinetrack_tools.active_learning import DEFAULT_STRATEGY
from spinetrack_tools.active_learning.rounds import run_round
from spinetrack_tools.active_learning.workspace import init
from spinetrack_tools.coco import save_coco
from spinetrack_tools.io import load_json
from spinetrack_tools.persons import Persons
from spinetrack_tools.train.model import ModelConfig
from spinetrack_tools.train.trainer import TrainConfig, train


def weighted(spec: str) -> tuple[str, ...]:
    """"standing:2,lying:1" -> ("standing", "standing", "lying") (synth draws postures uniformly from it)."""
    return tuple(p for item in spec.split(",") for p in [item.split(":")[0]] * int((item.split(":") + ["1"])[1]))


def merge(a: dict, b: dict, prefix_a: str, prefix_b: str) -> dict:
    """One COCO dict of two generated ones (ids of ``b`` shifted, file names in sub-folders)."""
    off_i, off_a = max(i["id"] for i in a["images"]), max(x["id"] for x in a["annotations"])
    return {**a, "images": [{**i, "file_name": f"{prefix_a}/{i['file_name']}"} for i in a["images"]]
            + [{**i, "id": i["id"] + off_i, "file_name": f"{prefix_b}/{i['file_name']}"} for i in b["images"]],
            "annotations": a["annotations"] + [{**x, "id": x["id"] + off_a, "image_id": x["image_id"] + off_i}
                                               for x in b["annotations"]]}


def source_model(work: Path, images: int, epochs: int, postures: tuple[str, ...]) -> Path:
    """Train (once; reused from ``work``) the starting model on the source domain."""
    run = work / f"source-model-{'-'.join(dict.fromkeys(postures))}-{images}x{epochs}"  # one per setting
    if (run / "model.pt").is_file():
        return run
    for split, n, seed in (("train", images, 300), ("val", max(images // 10, 30), 301)):
        save_coco(work / f"source-{split}.json",
                  synth.generate(n, seed=seed, postures=postures, image_dir=work / f"source-{split}"))
    train(work / "source-train.json", work / "source-train", work / "source-val.json", work / "source-val", run,
          TrainConfig(epochs=epochs, batch_size=32, lr=3e-3), ModelConfig(width=0.75),
          log=lambda s: print("  source model: " + s, file=sys.stderr))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=300, help="unlabelled target images")
    ap.add_argument("--labelled", type=int, default=150, help="initial labelled (source) images")
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--source-postures", default="standing")
    ap.add_argument("--target-postures", default="standing:8,sitting:1,bending:1",
                    help="posture:weight of the pool's persons")
    ap.add_argument("--val-postures", default="standing,sitting,bending")
    ap.add_argument("--source-images", type=int, default=1200)
    ap.add_argument("--source-epochs", type=int, default=10)
    ap.add_argument("--work", type=Path, help="folder kept between runs (the source model); default temporary")
    ap.add_argument("--strategies", default="random,least_confidence,hybrid")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    retrain = ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} --val-images "
               "{val_images} --init {init} --out {out} --lr " + str(args.lr) + " --epochs " + str(args.epochs))
    curves: dict[str, list[tuple[int, float, dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        work = args.work or tmp
        work.mkdir(parents=True, exist_ok=True)
        model = source_model(work, args.source_images, args.source_epochs, weighted(args.source_postures))
        print(f"source model: overall AP {load_json(model / 'metrics.json')['history'][-1]['AP_overall']:.3f} "
              f"on source validation images", flush=True)
        target = weighted(args.target_postures)
        labelled = synth.generate(args.labelled, seed=args.seed + 6, postures=weighted(args.source_postures),
                                  image_dir=tmp / "images" / "source")
        pool = merge(labelled, synth.generate(args.pool, seed=args.seed + 7, postures=target,
                                              image_dir=tmp / "images" / "target"), "source", "target")
        save_coco(tmp / "truth.json", pool)
        save_coco(tmp / "labeled.json", merge(labelled, {"images": [], "annotations": []}, "source", ""))
        save_coco(tmp / "val.json", synth.generate(args.val, seed=args.seed + 8, postures=weighted(args.val_postures),
                                                   image_dir=tmp / "val_images"))
        for name in args.strategies.split(","):
            ws = init(tmp / f"ws-{name}", tmp / "images", tmp / "truth.json", tmp / "labeled.json", tmp / "val.json",
                      model / "model.onnx", model / "model.pt", tmp / "val_images", name, args.batch,
                      retrain=retrain, seed=args.seed)
            for n in range(1, args.rounds + 1):
                run_round(ws, n, oracle=Persons.from_coco(pool), echo=lambda s: print("  " + s, file=sys.stderr))
            rows = ws.metrics()
            per_round: dict[int, dict] = {}
            for r in rows:
                per_round.setdefault(r["round"], {"n": r["labelled_images"] - args.labelled})[r["grp"]] = r["ap"]
            curves[name] = [(v["n"], v["overall"], v) for _, v in sorted(per_round.items())]
            print(f"{name}: " + "  ".join(f"+{n} imgs AP {ap_:.3f} (spine {v['spine']:.3f})"
                                          for n, ap_, v in curves[name]), flush=True)
    if "random" in curves:
        target_n, target_ap, _ = curves["random"][-1]
        print(f"random's final overall AP {target_ap:.3f} with {target_n} labelled pool images")
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
            print(f"  {name}: reaches it with {need:.0f} labelled images, saving {1 - need / target_n:.0%}"
                  + (" (the default strategy; target >= 25%)" if name == DEFAULT_STRATEGY else ""))


if __name__ == "__main__":
    main()
