"""The demo the README's first command runs: a whole active-learning loop on synthetic data with a domain shift.

The starting model (``models/spinetrack_standing``) was trained on people standing only; the pool adds people
sitting and bending, and the validation set has the three postures equally, so the pool has something to
teach. Synthesise the data (rendered images with known keypoints), validate and flag it, start Label Studio,
create a workspace with the standing model, run the rounds with simulated annotators working through Label
Studio (gate, merge, retrain), run random selection beside it with the true labels (no Label Studio, same
seed and budget), build the FiftyOne dataset, and report AP per round of both, the learning curve and
whether the rounds beat random.

The shared setup of the domain shift (``shifted_domain``, ``train_source_model``) and the oracle runner
(``oracle_rounds``) are used by ``scripts/bench_active_learning.py`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import synth
from .active_learning import DEFAULT_STRATEGY
from .coco import load_coco, save_coco
from .io import atomic_write_bytes
from .quality import flag
from .validate import validate

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "spinetrack_synth.onnx"
CHECKPOINT = ROOT / "models" / "spinetrack_synth.pt"
STANDING = ROOT / "models" / "spinetrack_standing"  # .onnx, .pt, .metrics.json: the starting model of the demo
SOURCE_POSTURES = "standing"
TARGET_POSTURES = "standing:8,sitting:1,bending:1"
VAL_POSTURES = "standing,sitting,bending"
SOURCE_IMAGES, SOURCE_EPOCHS = 600, 3  # fine-tuning the shipped model (CHECKPOINT) on them


def weighted(spec: str) -> tuple[str, ...]:
    """"standing:2,lying:1" -> ("standing", "standing", "lying") (synth draws postures uniformly from it)."""
    return tuple(p for item in spec.split(",") for p in [item.split(":")[0]] * int((item.split(":") + ["1"])[1]))


def merge(a: dict, b: dict, prefix_a: str, prefix_b: str) -> dict:
    """One COCO dict of two generated ones (ids of ``b`` shifted, file names in sub-folders)."""
    off_i = max((i["id"] for i in a["images"]), default=0)
    off_a = max((x["id"] for x in a["annotations"]), default=0)
    return {**a, "images": [{**i, "file_name": f"{prefix_a}/{i['file_name']}"} for i in a["images"]]
            + [{**i, "id": i["id"] + off_i, "file_name": f"{prefix_b}/{i['file_name']}"} for i in b["images"]],
            "annotations": a["annotations"] + [{**x, "id": x["id"] + off_a, "image_id": x["image_id"] + off_i}
                                               for x in b["annotations"]]}


def train_source_model(work: Path, images: int = SOURCE_IMAGES, epochs: int = SOURCE_EPOCHS,
                       postures: str = SOURCE_POSTURES, log: Callable[[str], None] = print,
                       init: Path | None = None, lr: float = 3e-3) -> Path:
    """Train (once; reused from ``work``) the starting model of the domain shift on the source domain (people
    ``postures``, by default standing only; from scratch, or fine-tuning the checkpoint ``init``): returns its
    run folder (model.onnx, model.pt, metrics.json)."""
    from .train.model import ModelConfig
    from .train.trainer import TrainConfig, train

    pts = weighted(postures)
    run_dir = work / (f"source-model-{'-'.join(dict.fromkeys(pts))}-{images}x{epochs}"
                      + (f"-from-{init.stem}-lr{lr}" if init else ""))  # one per setting
    if (run_dir / "model.pt").is_file():
        return run_dir
    for split, n, seed in (("train", images, 300), ("val", max(images // 10, 30), 301)):
        save_coco(work / f"source-{split}.json", synth.generate(n, seed=seed, postures=pts,
                                                                image_dir=work / f"source-{split}"))
    train(work / "source-train.json", work / "source-train", work / "source-val.json", work / "source-val", run_dir,
          TrainConfig(epochs=epochs, batch_size=32, lr=lr), ModelConfig(width=0.75), init=init,
          log=lambda s: log("  source model: " + s))
    return run_dir
GROUPS = ("overall", "body", "feet", "spine")


def retrain_hook(epochs: int, lr: float = 1e-3) -> str:
    """The retrain hook of the demo and the benchmark: fine-tune the reference trainer's checkpoint."""
    return ("{python} -m spinetrack_tools train --train {train} --images {images} --val {val} --val-images "
            "{val_images} --init {init} --out {out} --lr " + str(lr) + " --epochs " + str(epochs))




@dataclass
class ShiftedDomain:
    """The files of a domain-shift experiment: ``truth`` lists every pool image with its true keypoints (the
    initial labelled source images first, under ``source/``, then the target pool under ``target/``),
    ``labeled`` the initial labelled ones, ``val`` the validation set."""

    images: Path
    truth: Path
    labeled: Path
    val: Path
    val_images: Path
    labelled: int


def shifted_domain(data: Path, pool: int, labelled: int, val: int, seed: int = 0,
                   source: str = SOURCE_POSTURES, target: str = TARGET_POSTURES,
                   val_postures: str = VAL_POSTURES) -> ShiftedDomain:
    """Render (once; reused from ``data``) ``labelled`` source-domain images, a ``pool`` of target-domain images
    (``posture:weight``) and ``val`` validation images, deterministic for ``seed``."""
    d = ShiftedDomain(data / "images", data / "truth.json", data / "labeled.json", data / "val.json",
                      data / "val_images", labelled)
    if d.truth.is_file():
        return d
    lab = synth.generate(labelled, seed=seed + 6, postures=weighted(source), image_dir=d.images / "source")
    tgt = synth.generate(pool, seed=seed + 7, postures=weighted(target), image_dir=d.images / "target")
    save_coco(d.val, synth.generate(val, seed=seed + 8, postures=weighted(val_postures), image_dir=d.val_images))
    save_coco(d.labeled, merge(lab, {"images": [], "annotations": []}, "source", ""))
    save_coco(d.truth, merge(lab, tgt, "source", "target"))  # written last: it marks the data complete
    return d


def curve_of(rows: list[dict]) -> dict[int, dict[str, float]]:
    """Workspace metrics rows -> {round: {"labelled_images": n, group: AP, ...}}."""
    table: dict[int, dict[str, float]] = {}
    for r in rows:
        table.setdefault(r["round"], {"labelled_images": r["labelled_images"]})[r["grp"]] = r["ap"]
    return dict(sorted(table.items()))


def oracle_rounds(ws_dir: Path, d: ShiftedDomain, model: Path, checkpoint: Path | None, strategy: str,
                  batch_size: int, rounds: int, retrain: str, seed: int = 0,
                  echo: Callable[[str], None] = print) -> dict[int, dict[str, float]]:
    """Run ``rounds`` rounds of ``strategy`` with the true labels standing in for the annotators (no Label
    Studio) in a workspace at ``ws_dir`` (resumed when there); returns the curve (``curve_of``)."""
    from .active_learning.rounds import run_round
    from .active_learning.workspace import Workspace, init
    from .persons import Persons

    ws = Workspace.open(ws_dir) if (ws_dir / "config.toml").exists() else init(
        ws_dir, d.images, d.truth, d.labeled, d.val, model, checkpoint, d.val_images, strategy, batch_size,
        retrain=retrain, seed=seed)
    oracle = Persons.from_coco(load_coco(d.truth).raw)
    for n in range(1, rounds + 1):
        run_round(ws, n, oracle=oracle, echo=echo)
    return curve_of(ws.metrics())


def at_labels(curve: dict[int, dict[str, float]], n: float, group: str = "overall") -> float:
    """A curve's AP at ``n`` labelled images (linear between its rounds)."""
    pts = sorted((t["labelled_images"], t[group]) for t in curve.values() if group in t)
    return float(np.interp(n, [p[0] for p in pts], [p[1] for p in pts]))


def plot_curves(path: Path, curves: dict[str, dict[int, dict[str, float]]], title: str) -> Path:
    """AP per group against labelled images, one line style per strategy, as a PNG (atomic)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(GROUPS, ("black", "tab:blue", "tab:green", "tab:red")))
    for (name, curve), style in zip(curves.items(), ("-", "--", ":", "-.")):
        for g in GROUPS:
            pts = [(t["labelled_images"], t[g]) for t in curve.values() if g in t]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", color=colors[g], label=f"{g} ({name})")
    ax.set_xlabel("labelled images")
    ax.set_ylabel("OKS AP (validation)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def curve_table(curves: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    """The curves as text: per round, the labelled images and AP per group of each strategy."""
    names = list(curves)
    lines = [f"{'':14s}" + "".join(f" | {n:^35s}" for n in names),
             f"{'round':>5s} {'labelled':>8s}" + " | ".join([""] + [" ".join(f"{g:>8s}" for g in GROUPS)] * len(names))]
    for r in sorted(set().union(*curves.values())):
        row = f"{r:5d} {int(next(c[r] for c in curves.values() if r in c)['labelled_images']):8d}"
        for n in names:
            t = curves[n].get(r, {})
            row += " | " + " ".join(f"{t.get(g, float('nan')):8.3f}" for g in GROUPS)
        lines.append(row)
    return lines


def verdict(al: dict[int, dict[str, float]], rnd: dict[int, dict[str, float]], gain: float = 0.05) -> tuple[bool, str]:
    """Did the rounds do their job: overall AP after the last round >= round 0 + ``gain``, and above random at
    the same number of labelled images? (ok, the sentence)."""
    first, last = al[min(al)], al[max(al)]
    ref = at_labels(rnd, last["labelled_images"])
    up, beats = last["overall"] - first["overall"], last["overall"] > ref
    ok = up >= gain and beats
    return ok, (f"overall AP {first['overall']:.3f} -> {last['overall']:.3f} ({up:+.3f}; target >= +{gain:.2f}: "
                f"{'met' if up >= gain else 'MISSED'}); random at {int(last['labelled_images'])} labelled images: "
                f"{ref:.3f} ({'beaten' if beats else 'NOT beaten'})")


def run(work_dir: Path, images: int = 150, rounds: int = 4, batch_size: int = 30, val_images: int = 60,
        labelled: int = 20, seed: int = 0, strategy: str = DEFAULT_STRATEGY, launch_browser: bool = False,
        echo: Callable[[str], None] = print, annotators: int = 2, epochs: int = 12) -> dict:
    """Run the demo in ``work_dir``; returns the curves ({strategy: curve_of(...)}, the baseline under "random").
    ``annotators``: simulated annotators per task (Label Studio users with their own keys and noise; their
    consensus is merged); ``epochs`` of fine-tuning per round."""
    from .active_learning import simulate
    from .active_learning.rounds import connect, run_round
    from .active_learning.workspace import Workspace, init
    from .browse import build
    from .labelstudio.server import start

    work_dir = work_dir.resolve()
    data = work_dir / "data"
    model, checkpoint = STANDING.with_suffix(".onnx"), STANDING.with_suffix(".pt")
    retrain = retrain_hook(epochs)
    echo(f"1. synthesising {labelled} labelled images of people standing, a pool of {images} images where a fifth "
         f"of the people sit or bend, and {val_images} validation images (the three postures equally)")
    d = shifted_domain(data, images, labelled, val_images, seed)
    ds = load_coco(d.truth)
    boxes_path = data / "boxes.json"
    if not boxes_path.is_file():  # the pool as the annotators get it: boxes, no keypoints
        save_coco(boxes_path, {**ds.raw, "annotations": [{**a, "keypoints": [0] * len(a["keypoints"]),
                                                           "num_keypoints": 0} for a in ds.raw["annotations"]]})
    v, f = validate(ds).summary(), flag(ds.persons)
    f.write_json(data / "flag_report.json")
    echo(f"2. validate: {v['errors']} errors; flag: {f.summary()['annotations_with_errors']} of {len(ds)} "
         f"annotations flagged ({data / 'flag_report.json'})")
    info = start(work_dir / "labelstudio", data)
    echo(f"3. Label Studio at {info.url} (login {info.username} / {info.password})")
    ws_path = work_dir / "workspace"
    ws = Workspace.open(ws_path) if (ws_path / "config.toml").exists() else init(
        ws_path, d.images, boxes_path, d.labeled, d.val, model, checkpoint, d.val_images, strategy, batch_size,
        "spinetrack-quickstart", retrain, server_dir=work_dir / "labelstudio", seed=seed,
        annotators=annotators)  # issue 15: several annotators per task
    echo(f"4. workspace {ws.path}: starting model {model.name} (standing people only), {strategy}, "
         f"{batch_size} images per round, {epochs} epochs of fine-tuning per round")
    truth = ds.persons

    members: list = []  # issue 15: the simulated annotators, signed up once

    def annotate(w: Workspace, n: int) -> None:
        if not members:
            members.extend(simulate.team(connect(w)[0], w.config["labelstudio"]["maximum_annotations"], tolerance=0.01))
        simulate.annotate(members, w.config["labelstudio"]["project"], truth, set(w.round_samples(n)))

    for n in range(1, rounds + 1):
        echo(f"5.{n} round {n}")
        run_round(ws, n, wait=True, annotate=annotate, poll_s=1.0, echo=lambda s: echo("    " + s))
    echo(f"6. the baseline: random selection, the true labels instead of Label Studio, same seed and budget")
    curves = {strategy: curve_of(ws.metrics())}
    if strategy != "random":
        curves["random"] = oracle_rounds(work_dir / "baseline-random", d, model, checkpoint, "random", batch_size,
                                         rounds, retrain, seed, echo=lambda s: echo("    " + s))
    last = ws.round_dir(rounds) / "pool_pred.json"
    _, dataset_path = ws.latest_dataset()
    fo_name = "spinetrack-quickstart"
    build(truth, d.images, [last] if last.is_file() else [],
          [data / "flag_report.json"], name=fo_name, sample_fields=ws.sample_fields(), echo=lambda s: echo("7. " + s))
    curve_png = plot_curves(work_dir / "learning_curve.png", curves,
                            f"standing-only start, pool adds sitting/bending (seed {seed})")
    echo(f"8. OKS AP on the validation set per round (round 0 = the standing-only model), {strategy} through "
         "Label Studio and random with the true labels:")
    for line in curve_table(curves):
        echo("   " + line)
    if "random" in curves and strategy != "random":
        ok, sentence = verdict(curves[strategy], curves["random"])
        echo(f"   {'target met' if ok else 'TARGET MISSED with this seed'}: {sentence}")
    echo(f"   learning curve: {curve_png}; dataset version: {dataset_path}")
    echo(f"   Label Studio project 'spinetrack-quickstart' at {info.url}; "
         f"`spinetrack labelstudio stop --dir {work_dir / 'labelstudio'}` ends the server")
    echo(f"   FiftyOne dataset {fo_name!r}: spinetrack browse {d.truth} --images {d.images} "
         f"--workspace {ws.path} --name {fo_name}")
    echo(f"   spinetrack status --workspace {ws.path}")
    return curves
