"""Active learning: ``init``, ``al-round``, ``status``, ``annotate-sim`` and the ``quickstart`` demo."""

from __future__ import annotations

from pathlib import Path

import click

from ..active_learning import DEFAULT_STRATEGY, STRATEGY_NAMES
from .common import LS_DIR, ray_options, ray_target, workspace_option


@click.command("init")
@click.argument("workspace", type=click.Path(path_type=Path, file_okay=False))
@click.option("--pool", "pool_images", required=True, type=click.Path(path_type=Path), metavar="DIR|VIDEO",
              help="The unlabelled pool: a folder of images and/or videos, or one video (with --boxes: the folder "
                   "of its images).")
@click.option("--boxes", type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file listing the pool images and their person boxes (default: none, a detector finds "
                   "the persons when a round selects).")
@click.option("--detector", "detector_arg", metavar="NAME|PATH",
              help="Person detector of a pool without --boxes: a released name (rfdetr-small|medium|large|xlarge) "
                   "or an ONNX file (default: the RF-DETR the spinepose package pairs with --model, e.g. "
                   "rfdetr-small for spinepose-small).")
@click.option("--det-score", type=click.FloatRange(0, 1), help="Detector score threshold (default: the "
                                                               "detector's own, 0.3 for RF-DETR).")
@click.option("--every", type=click.IntRange(1), help="Videos: keep every N-th frame (from the first).")
@click.option("--max-frames", type=click.IntRange(1),
              help="Videos: at most this many frames of each (spread over the video without --every).")
@click.option("--frames", "frames_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder the video frames are written to, once each, as <video>_<frame index>.jpg "
                   "(default WORKSPACE/frames).")
@click.option("--labeled", type=click.Path(path_type=Path, dir_okay=False),
              help="The labelled set so far (dataset version 0; file names relative to the pool's images "
                   "folder). Default: none, round 1 pre-annotates with --model.")
@click.option("--val", type=click.Path(path_type=Path, dir_okay=False),
              help="Validation set: OKS AP of every round's model. Without it AP is NOT measured (the evaluate "
                   "stage records that); it can be added to config.toml later.")
@click.option("--val-images", type=click.Path(path_type=Path, file_okay=False),
              help="Its images (default: the pool's images folder).")
@click.option("--model", "model_arg", metavar="NAME|PATH",
              help="Pose model: a released name (spinepose-small|medium|large|xlarge[@v1|@v2], see `spinetrack "
                   "models`) or an ONNX file. Default: spinepose-medium (14.3 M parameters), as the spinepose CLI; "
                   "on a 2-core machine consider spinepose-small (6.0 M). A name is pinned to the Hub commit it "
                   "resolves to now.")
@click.option("--revision", help="Hub branch, tag or commit of a --model name (default: main's commit now).")
@click.option("--det-revision", help="Hub branch, tag or commit of a --detector name.")
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              help="The model's training checkpoint, to fine-tune from (models/spinetrack_synth.pt).")
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True, type=click.Choice(STRATEGY_NAMES))
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(1), help="Images per round.")
@click.option("--project", help="Label Studio project title (default spinetrack-al-<workspace name>).")
@click.option("--labelstudio-url", default="", help="Label Studio URL (default: LABEL_STUDIO_URL, or the "
                                                      "local server of --labelstudio-dir).")
@click.option("--labelstudio-dir", "ls_dir", type=click.Path(path_type=Path, file_okay=False), default=LS_DIR,
              show_default=True, help="Folder of the local server (`spinetrack labelstudio start --dir`).")
@click.option("--retrain", help="Retrain command template with {train} {val} {images} {val_images} {init} "
                                "{model} {out} {python} (default: the reference trainer).")
@click.option("--annotators", default=1, show_default=True, type=click.IntRange(1),
              help="Annotators per task (Label Studio's maximum_annotations); their labels are merged by consensus.")
@click.option("--agreement", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Persons whose annotators agree below this OKS go to review.")
def init_cmd(workspace: Path, pool_images: Path, boxes: Path | None, detector_arg: str | None,
             det_score: float | None, every: int | None, max_frames: int | None, frames_dir: Path | None,
             labeled: Path | None, val: Path | None, val_images: Path | None, model_arg: str | None,
             revision: str | None, det_revision: str | None, checkpoint: Path | None, strategy: str,
             batch_size: int, project: str | None, labelstudio_url: str, ls_dir: Path, retrain: str | None,
             annotators: int, agreement: float) -> None:
    """Create an active-learning workspace: config.toml and the state database.

    Without --boxes the pool is your own media: images and videos (frames sampled with --every /
    --max-frames), persons found by the detector when a round selects. --labeled and --val are optional.
    """
    from ..active_learning.workspace import DEFAULT_RETRAIN, NO_VAL, init

    if boxes is not None and (detector_arg or det_score is not None or det_revision):
        raise click.UsageError("--detector, --det-score and --det-revision are for a pool without --boxes")
    ws = init(workspace, pool_images, boxes, labeled, val, model_arg, checkpoint, val_images, strategy, batch_size,
              project, retrain or DEFAULT_RETRAIN, labelstudio_url, server_dir=ls_dir, detector=detector_arg,
              revision=revision, det_revision=det_revision, det_score=det_score, every=every, max_frames=max_frames,
              frames_dir=frames_dir, annotators=annotators, agreement=agreement)
    c, m, det = ws.counts(), ws.config["model"], ws.config.get("detector")
    click.echo(f"workspace {ws.path}: {c.get('pool', 0)} pool images, {c.get('labelled', 0)} labelled "
               f"(images in {ws.data('images')})")
    click.echo(f"  model {_pinned(m['onnx'], m.get('revision'))}; persons from "
               + (f"the detector {_pinned(det['model'], det.get('revision'))}" if det else f"the boxes of {boxes}"))
    if labeled is None:
        click.echo("  no labelled set: dataset version 0 is empty; round 1 pre-annotates with the model")
    if val is None:
        click.echo(f"  note: {NO_VAL}")
    click.echo(f"  edit {ws.path / 'config.toml'} to change the strategy, batch size or hooks; next: "
               f"spinetrack al-round --iter 1 --workspace {workspace}")


def _pinned(model: str, revision: str | None) -> str:
    return f"{model} (Hub commit {revision[:12]})" if revision else model


@click.command("al-round")
@click.option("--iter", "n", required=True, type=click.IntRange(1), help="Round number (1, 2, ...).")
@workspace_option
@click.option("--wait", is_flag=True, help="Poll Label Studio until the batch is annotated.")
@click.option("--until", type=click.Choice(["select", "predict", "push", "pull", "gate", "merge", "retrain",
                                            "evaluate"]), help="Stop after this stage.")
@ray_options
def al_round(n: int, ws_path: Path, wait: bool, until: str | None, use_ray: bool, ray_address: str | None) -> None:
    """Run active-learning round N: select, predict, push, pull, gate, merge, retrain, evaluate.

    Every stage is checkpointed in the workspace: kill the command anywhere and run it again. Without
    --wait the command reports annotation progress and exits 0 until the batch is done. With --ray the
    select stage predicts on the pool with Ray Data (the same predictions, so the same images are picked).
    """
    from ..active_learning.rounds import run_round
    from ..active_learning.workspace import Workspace

    where = ray_target(use_ray, ray_address)
    ws = Workspace.open(ws_path)
    finished = run_round(ws, n, wait=wait, until=until, echo=click.echo, ray_address=where)
    click.echo(f"round {n}: {'done' if finished else 'waiting for annotations'} (stage "
               f"{ws.stage(n) or 'none'})")


@click.command("status")
@workspace_option
@click.option("--json", "as_json", is_flag=True)
def status_cmd(ws_path: Path, as_json: bool) -> None:
    """Rounds, sample counts, AP per group, the review queue and the annotators' agreement and edits."""
    from ..active_learning.review import PLOT, REPORT, summary_lines
    from ..active_learning.workspace import Workspace
    from ..io import dumps_json, load_json

    ws = Workspace.open(ws_path)
    rounds, metrics, notes, queue = ws.rounds(), ws.metrics(), ws.notes(), ws.review_queue()
    report = ws.path / REPORT
    annotators = load_json(report) if report.is_file() else None
    out = {"workspace": str(ws.path), "samples": ws.counts(), "rounds": rounds, "metrics": metrics,
           "notes": notes, "learning_curve": str(ws.path / "learning_curve.png"), "review_queue": queue,
           "annotators": annotators, "annotators_report": str(report), "annotators_plot": str(ws.path / PLOT)}
    if as_json:
        click.echo(dumps_json(out, indent=True).decode())
        return
    click.echo(f"workspace {ws.path}: " + ", ".join(f"{k} {v}" for k, v in sorted(out["samples"].items())))
    for r in rounds:
        click.echo(f"  round {r['round']}: stage {r['stage']}, dataset version {r['dataset']}")
        for note in notes:
            if note["round"] == r["round"]:
                click.echo(f"    {note['stage']}: {note['note']}")
    groups = sorted({m["grp"] for m in metrics})
    if metrics:
        click.echo(f"  {'round':>5s} {'labelled':>8s} " + " ".join(f"{g:>8s}" for g in groups))
        for rnd in sorted({m["round"] for m in metrics}):
            row = {m["grp"]: m for m in metrics if m["round"] == rnd}
            click.echo(f"  {rnd:5d} {next(iter(row.values()))['labelled_images']:8d} " +
                       " ".join(f"{row[g]['ap']:8.3f}" if g in row else " " * 8 for g in groups))
        click.echo(f"  learning curve: {out['learning_curve']}")
    hint = " (in Label Studio: decide 'plausible as drawn' or fix the labels; the next round's pull picks it up)"
    click.echo(f"  review queue: {len(queue)} images" + (hint if queue else ""))
    for q in queue[:20]:
        more = f" (+{len(q['reasons']) - 1} more)" if len(q["reasons"]) > 1 else ""
        click.echo(f"    image {q['image_id']} ({q['file_name']}, round {q['round']}, task {q['task_id']}): "
                   f"{(q['reasons'] or ['?'])[0]}{more}")
    if len(queue) > 20:
        click.echo(f"    ... {len(queue) - 20} more (--json lists all)")
    if annotators is not None:
        for line in summary_lines(annotators):
            click.echo(f"  {line}")
        click.echo(f"  per-keypoint agreement and edits: {report} ({ws.path / PLOT})")


@click.command("annotate-sim")
@workspace_option
@click.option("--truth", "truth_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file with the true keypoints of the pool.")
@click.option("--tolerance", default=0.05, show_default=True, type=click.FloatRange(0),
              help="A predicted point within this fraction of the box size is accepted as it is.")
@click.option("--annotators", type=click.IntRange(1),
              help="How many simulated annotators, each a Label Studio user with its own key (default: the "
                   "workspace's maximum_annotations).")
@click.option("--noise", multiple=True, type=click.FloatRange(0),
              help="Click noise of each annotator, a fraction of the box size (repeat; default 0, 0.004, 0.008, ...).")
def annotate_sim(ws_path: Path, truth_path: Path, tolerance: float, annotators: int | None,
                 noise: tuple[float, ...]) -> None:
    """SIMULATED annotators (demos, benchmarks): annotate the open tasks from the true keypoints."""
    from ..active_learning.rounds import connect
    from ..active_learning.simulate import annotate, team
    from ..active_learning.workspace import Workspace
    from ..coco import read_persons

    ws = Workspace.open(ws_path)
    truth = read_persons(truth_path)
    conn, _ = connect(ws)
    members = team(conn, annotators or ws.config["labelstudio"]["maximum_annotations"], list(noise), tolerance)
    n = annotate(members, ws.config["labelstudio"]["project"], truth)
    click.echo(f"simulated annotators ({len(members)}): {n} annotations submitted")


@click.command()
@click.option("--dir", "work_dir", default=Path("spinetrack-quickstart"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False), help="Folder for everything the demo writes.")
@click.option("--rounds", default=4, show_default=True, type=click.IntRange(1), help="Active-learning rounds.")
@click.option("--images", "num_images", default=150, show_default=True, type=click.IntRange(4),
              help="Synthetic pool images (a fifth of the people sit or bend).")
@click.option("--labelled", default=20, show_default=True, type=click.IntRange(1),
              help="Initial labelled images (people standing, like the starting model's training data).")
@click.option("--val-images", default=60, show_default=True, type=click.IntRange(2),
              help="Validation images (standing, sitting and bending equally).")
@click.option("--batch-size", default=30, show_default=True, type=click.IntRange(1), help="Images per round.")
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(1), help="Fine-tuning epochs per round.")
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True, type=click.Choice(STRATEGY_NAMES))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--annotators", default=2, show_default=True, type=click.IntRange(1),
              help="Simulated annotators per task (Label Studio users with their own keys and noise).")
def quickstart(work_dir: Path, rounds: int, num_images: int, labelled: int, val_images: int, batch_size: int,
               epochs: int, strategy: str, seed: int, annotators: int) -> None:
    """Run the demo: an active-learning loop on synthetic data with a domain shift, end to end.

    The starting model knows people standing only; the pool adds people sitting and bending. Synthesise the
    data (rendered images with known keypoints), validate and flag it, start Label Studio, create a workspace
    with that model, run the rounds with SIMULATED annotators correcting pre-annotations through Label Studio
    (gate, merge, retrain), run random selection beside it with the true labels (same seed and budget), build
    the FiftyOne dataset, and print AP per round of both and the learning curve (learning_curve.png).
    """
    from ..quickstart import run

    run(work_dir, images=num_images, rounds=rounds, batch_size=batch_size, val_images=val_images, labelled=labelled,
        seed=seed, strategy=strategy, echo=click.echo, annotators=annotators, epochs=epochs)
