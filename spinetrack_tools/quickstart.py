"""The demo the README's first command runs: a whole active-learning loop on synthetic data.

Synthesise a pool (rendered images with known keypoints), validate and flag it, start Label Studio,
create a workspace with the shipped model, run the rounds with the simulated annotator working through
Label Studio, build the FiftyOne dataset, and report AP per round and where everything is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import synth
from .active_learning import DEFAULT_STRATEGY
from .coco import load_coco, save_coco
from .quality import flag
from .validate import validate

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "spinetrack_synth.onnx"
CHECKPOINT = ROOT / "models" / "spinetrack_synth.pt"
QUICK_RETRAIN = ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} "
                 "--val-images {val_images} --init {init} --out {out} --epochs 2 --lr 1e-3")


def run(work_dir: Path, images: int = 500, rounds: int = 3, batch_size: int = 60, val_images: int = 120,
        labelled: int = 40, seed: int = 0, strategy: str = DEFAULT_STRATEGY, launch_browser: bool = False,
        echo: Callable[[str], None] = print, annotators: int = 2) -> dict:
    """Run the demo in ``work_dir``; returns the AP per round. ``annotators``: simulated annotators per task
    (Label Studio users with their own keys and noise; their consensus is merged)."""
    from .active_learning import simulate
    from .active_learning.rounds import connect, run_round
    from .active_learning.workspace import Workspace, init
    from .browse import build
    from .labelstudio.server import start

    work_dir = work_dir.resolve()
    data = work_dir / "data"
    truth_path, val_path = data / "truth.json", data / "val.json"
    if not truth_path.is_file():
        echo(f"1. synthesising {images + labelled} images (pool + labelled) and {val_images} validation images")
        pool = synth.generate(images + labelled, seed=seed, image_dir=data / "images")
        save_coco(val_path, synth.generate(val_images, seed=seed + 1000, image_dir=data / "val_images"))
        lab_ids = {im["id"] for im in pool["images"][:labelled]}
        save_coco(data / "labeled.json", {**pool, "images": [im for im in pool["images"] if im["id"] in lab_ids],
                                          "annotations": [a for a in pool["annotations"] if a["image_id"] in lab_ids]})
        boxes = {**pool, "annotations": [{**a, "keypoints": [0] * len(a["keypoints"]), "num_keypoints": 0}
                                         for a in pool["annotations"]]}
        save_coco(data / "boxes.json", boxes)
        save_coco(truth_path, pool)
    ds = load_coco(truth_path)
    v, f = validate(ds).summary(), flag(ds.persons)
    f.write_json(data / "flag_report.json")
    echo(f"2. validate: {v['errors']} errors; flag: {f.summary()['annotations_with_errors']} of {len(ds)} "
         f"annotations flagged ({data / 'flag_report.json'})")
    info = start(work_dir / "labelstudio", data)
    echo(f"3. Label Studio at {info.url} (login {info.username} / {info.password})")
    ws_path = work_dir / "workspace"
    ws = Workspace.open(ws_path) if (ws_path / "config.toml").exists() else init(
        ws_path, data / "images", data / "boxes.json", data / "labeled.json", val_path, MODEL,
        CHECKPOINT if CHECKPOINT.is_file() else None, data / "val_images", strategy, batch_size,
        "spinetrack-quickstart", QUICK_RETRAIN, server_dir=work_dir / "labelstudio", seed=seed,
        annotators=annotators)  # issue 15: several annotators per task
    echo(f"4. workspace {ws.path} ({strategy}, {batch_size} images per round)")
    truth = ds.persons

    members: list = []  # issue 15: the simulated annotators, signed up once

    def annotate(w: Workspace, n: int) -> None:
        if not members:
            members.extend(simulate.team(connect(w)[0], w.config["labelstudio"]["maximum_annotations"], tolerance=0.01))
        simulate.annotate(members, w.config["labelstudio"]["project"], truth, set(w.round_samples(n)))

    for n in range(1, rounds + 1):
        echo(f"5.{n} round {n}")
        run_round(ws, n, wait=True, annotate=annotate, poll_s=1.0, echo=lambda s: echo("    " + s))
    rows = ws.metrics()
    last = ws.round_dir(rounds) / "pool_pred.json"
    _, dataset_path = ws.latest_dataset()
    fo_name = "spinetrack-quickstart"
    build(truth, data / "images", [last] if last.is_file() else [],
          [data / "flag_report.json"], name=fo_name, sample_fields=ws.sample_fields(), echo=lambda s: echo("6. " + s))
    table: dict[int, dict[str, float]] = {}
    for r in rows:
        table.setdefault(r["round"], {"labelled_images": r["labelled_images"]})[r["grp"]] = r["ap"]
    echo("7. OKS AP on the validation set per round (round 0 = the shipped model):")
    groups = [g for g in ("overall", "body", "feet", "spine") if any(g in t for t in table.values())]
    echo(f"   {'round':>5s} {'labelled':>8s} " + " ".join(f"{g:>8s}" for g in groups))
    for n, t in sorted(table.items()):
        echo(f"   {n:5d} {t['labelled_images']:8d} " + " ".join(f"{t.get(g, float('nan')):8.3f}" for g in groups))
    echo(f"   learning curve: {ws.path / 'learning_curve.png'}; dataset version: {dataset_path}")
    echo(f"   Label Studio project 'spinetrack-quickstart' at {info.url}; "
         f"`spinetrack labelstudio stop --dir {work_dir / 'labelstudio'}` ends the server")
    echo(f"   FiftyOne dataset {fo_name!r}: spinetrack browse {truth_path} --images {data / 'images'} "
         f"--workspace {ws.path} --name {fo_name}")
    echo(f"   spinetrack status --workspace {ws.path}")
    return table
