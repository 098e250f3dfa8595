#!/usr/bin/env python3
"""Benchmark: active-learning strategies against random selection on synthetic data with a domain shift.

The starting model is trained on a source domain (people standing), as body datasets are dominated by
upright people: by default the shipped ``models/spinetrack_standing`` (the all-postures shipped model
fine-tuned on standing people, scripts/train_standing_model.py; the quickstart starts from it too), or with
``--train-source`` one trained from scratch here and kept in --work. The
unlabelled pool comes from a target domain where most people stand again but a fifth sit or bend (the
flexed spines SpineTrack is about); the validation set has the three postures equally. The initial labelled
set is source-domain images (kept in every retraining, so the model does not forget them). The data set-up
and the oracle rounds are the quickstart's (``quickstart.shifted_domain``, ``quickstart.oracle_rounds``).

Per seed: same pool, same initial labelled set, same batch size and rounds for every strategy; the selected
images' true labels stand in for the annotators (no Label Studio), the reference trainer fine-tunes from the
previous round on everything labelled so far, and the validation set (unseen images) gives OKS AP after
every round. Prints AP per round per strategy and, for each strategy, the labelled pool images it needed to
reach random's final overall AP (interpolated) against random's count: the saving (target: >= 25% for the
default strategy); then the saving's mean and spread over the seeds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from spinetrack_tools.active_learning import DEFAULT_STRATEGY
from spinetrack_tools.io import load_json
from spinetrack_tools.quickstart import (SOURCE_POSTURES, STANDING, TARGET_POSTURES,
                                         VAL_POSTURES, oracle_rounds, retrain_hook, shifted_domain,
                                         train_source_model)


def saving(curves: dict[str, list[tuple[int, float]]]) -> dict[str, float | None]:
    """Per strategy, the share of random's labelled pool images it saved reaching random's final overall AP
    (None: not reached within the budget), printed as it goes."""
    target_n, target_ap = curves["random"][-1]
    start_ap = curves["random"][0][1]
    print(f"random's final overall AP {target_ap:.3f} with {target_n} labelled pool images")
    if target_ap <= start_ap:
        print(f"  random's final AP is not above the starting model's ({start_ap:.3f}): the rounds did not help "
              "on this data, so no saving can be measured")
        return {}
    out: dict[str, float | None] = {}
    for name, c in curves.items():
        if name == "random":
            continue
        ns, aps = np.array([x[0] for x in c], float), np.array([x[1] for x in c])
        reached = np.flatnonzero(aps >= target_ap)
        reached = reached[reached > 0]  # the shared starting point does not count
        if not len(reached):
            print(f"  {name}: does not reach it within the budget (best {aps.max():.3f})")
            out[name] = None
            continue
        i = reached[0]
        need = ns[i - 1] + (target_ap - aps[i - 1]) / (aps[i] - aps[i - 1]) * (ns[i] - ns[i - 1])
        out[name] = 1 - need / target_n
        print(f"  {name}: reaches it with {need:.0f} labelled images, saving {out[name]:.0%}"
              + (" (the default strategy; target >= 25%)" if name == DEFAULT_STRATEGY else ""), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=300, help="unlabelled target images")
    ap.add_argument("--labelled", type=int, default=150, help="initial labelled (source) images")
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--source-postures", default=SOURCE_POSTURES)
    ap.add_argument("--target-postures", default=TARGET_POSTURES, help="posture:weight of the pool's persons")
    ap.add_argument("--val-postures", default=VAL_POSTURES)
    ap.add_argument("--train-source", action="store_true",
                    help="train the starting model here (kept in --work) instead of the shipped standing model")
    ap.add_argument("--source-images", type=int, default=1200, help="with --train-source (from scratch)")
    ap.add_argument("--source-epochs", type=int, default=10, help="with --train-source")
    ap.add_argument("--work", type=Path, help="folder kept between runs (data, workspaces); default temporary")
    ap.add_argument("--strategies", default="random,least_confidence,hybrid")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each a whole run")
    args = ap.parse_args()
    retrain = retrain_hook(args.epochs, args.lr)
    names = args.strategies.split(",")
    savings: dict[str, list[float | None]] = {n: [] for n in names}
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp_:
        work = args.work or Path(tmp_)
        work.mkdir(parents=True, exist_ok=True)
        if args.train_source:
            run = train_source_model(work, args.source_images, args.source_epochs, args.source_postures,
                                     log=lambda s: print(s, file=sys.stderr))
            model, ck, metrics = run / "model.onnx", run / "model.pt", run / "metrics.json"
        else:
            model, ck, metrics = (STANDING.with_suffix(s) for s in (".onnx", ".pt", ".metrics.json"))
        print(f"starting model {model}: overall AP {load_json(metrics)['history'][-1]['AP_overall']:.3f} on source "
              "validation images", flush=True)
        for seed in seeds:
            print(f"== seed {seed}", flush=True)
            setting = f"seed{seed}-p{args.pool}-l{args.labelled}-v{args.val}-{args.target_postures}".replace(":", "")
            d = shifted_domain(work / setting / "data", args.pool, args.labelled, args.val, seed, args.source_postures,
                               args.target_postures, args.val_postures)
            curves: dict[str, list[tuple[int, float]]] = {}
            for name in names:
                tag = f"{name}-b{args.batch}-e{args.epochs}-lr{args.lr}-{'src' if args.train_source else 'shipped'}"
                curve = oracle_rounds(work / setting / tag, d, model, ck, name, args.batch, args.rounds, retrain,
                                      seed, echo=lambda s: print("  " + s, file=sys.stderr))
                curves[name] = [(int(t["labelled_images"]) - args.labelled, t["overall"]) for t in curve.values()]
                print(f"{name}: " + "  ".join(f"+{int(t['labelled_images']) - args.labelled} imgs AP "
                                              f"{t['overall']:.3f} (spine {t['spine']:.3f})"
                                              for t in curve.values()), flush=True)
            if "random" in curves:
                for name, s in saving(curves).items():
                    savings[name].append(s)
    print(f"label saving against random over seeds {args.seeds} (reaching random's final overall AP):")
    for name in names:
        if name == "random":
            continue
        got = [0.0 if s is None else s for s in savings[name]]  # not reached within the budget: no saving
        per = ", ".join("not reached" if s is None else f"{s:.0%}" for s in savings[name])
        spread = (f"mean {np.mean(got):.0%} ± {np.std(got, ddof=1) if len(got) > 1 else 0:.0%} (sd; not reached "
                  f"counted as 0%), min {min(got):.0%}, max {max(got):.0%}") if got else "no saving measured"
        print(f"  {name}: per seed {per}; {spread}" + (" (default strategy; target >= 25%)"
                                                       if name == DEFAULT_STRATEGY else ""))


if __name__ == "__main__":
    main()
