"""Models: ``predict`` (pre-annotation), ``evaluate`` (OKS AP per group) and ``train``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import BadInput, ray_options, ray_target, resolve_skeleton, skeleton_option


@click.command("predict")
@click.option("--model", "model_arg", required=True, metavar="NAME|PATH",
              help="Top-down pose model: a released name (spinepose-small|medium|large|xlarge[@v1|@v2], see "
                   "`spinetrack models`) or an ONNX file (SpinePose / RTMPose SimCC, or HRNet-style heatmaps).")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of the images.")
@click.option("--boxes", "boxes_path", type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file whose person boxes (and images) to use.")
@click.option("--detector", "detector_arg", metavar="NAME|PATH",
              help="Person detector run on every image in --images: a released name (rfdetr-small|medium|large|"
                   "xlarge) or an ONNX file (RF-DETR, or a detector with its NMS exported, dets [1, N, 5]).")
@click.option("--revision", default=None, help="Branch, tag or commit of the --model repository (names only).")
@click.option("--det-revision", default=None, help="Branch, tag or commit of the --detector repository.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO results JSON: image_id, category_id, keypoints (x, y, confidence), score.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--rgb", is_flag=True, help="Feed RGB crops (the SpinePose package feeds BGR, the default).")
@click.option("--score", "score_mode", type=click.Choice(["mean", "min"]), default="mean", show_default=True,
              help="Keypoint confidence from the two SimCC maxima: their mean (SpinePose) or min (mmpose).")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1),
              help="onnxruntime threads in this process (with --ray: see there).")
@click.option("--det-score", default=None, type=click.FloatRange(0, 1),
              help="Detector score threshold (default: 0.3 for RF-DETR, as the spinepose package; 0.5 for an "
                   "NMS-exported detector).")
@ray_options
def predict_cmd(model_arg: str, images_dir: Path, boxes_path: Path | None, detector_arg: str | None,
                revision: str | None, det_revision: str | None, out_path: Path, batch_size: int, rgb: bool,
                score_mode: str, threads: int, det_score: float | None, use_ray: bool,
                ray_address: str | None) -> None:
    """Pre-annotate images with a top-down ONNX pose model.

    Boxes come from a COCO file (--boxes) or a person detector (--detector); each is padded by 1.25,
    widened to the model's aspect ratio and cropped with an affine warp; outputs are decoded (SimCC
    argmax, or heatmaps with DARK refinement) and mapped back to image pixels (v1 SpinePose models then
    get the package's smoothed spine). The instance score is the box score times the mean of the keypoint
    confidences above 0.2, as the SpineTrack metric does. Released models are fetched into the Hugging
    Face cache (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE apply) and checked against the Hub's sha256.
    With --ray the same batches run on Ray Data actors (the ray extra): the same results, in the same order.
    """
    from ..coco import read_persons
    from ..inference.hub import load_person_detector, load_pose_model, parse
    from ..inference.distributed import run_predict
    from ..inference.predict import jobs_from_coco, jobs_from_folder
    from ..io import save_json

    if (boxes_path is None) == (detector_arg is None):
        raise click.UsageError("give exactly one of --boxes and --detector")
    where = ray_target(use_ray, ray_address)
    if not images_dir.is_dir():
        raise BadInput(f"{images_dir}: images folder not found")
    parse(model_arg, "pose")  # both names checked before anything is fetched
    if detector_arg is not None:
        parse(detector_arg, "detector")
    model = load_pose_model(model_arg, threads, revision)
    skeleton = None
    if boxes_path is not None:
        ds = read_persons(boxes_path)
        jobs, detector, skeleton = jobs_from_coco(ds, images_dir), None, ds.skeleton
    else:
        detector = load_person_detector(detector_arg, threads, det_score, det_revision)
        jobs = jobs_from_folder(images_dir)
    missing = [str(p) for p, _ in jobs if not p.is_file()]
    if missing:
        raise BadInput(f"{missing[0]}: image not found ({len(missing)} missing)")
    preds = run_predict(where, model, jobs, skeleton, detector, batch_size=batch_size, rgb=rgb,
                        score_mode=score_mode)
    save_json(out_path, preds.to_results())
    click.echo(f"{len(preds)} persons on {len(jobs)} images -> {out_path}")


@click.command("models")
@click.option("--download", "to_download", multiple=True, metavar="NAME",
              help="Fetch these models into the cache now (e.g. before working offline). Repeatable.")
@click.option("--hub", "ask_hub", is_flag=True, help="Also ask the Hub for each file's download size.")
@click.option("--revision", default=None, help="Branch, tag or commit (for --download, --hub and the cache column).")
def models_cmd(to_download: tuple[str, ...], ask_hub: bool, revision: str | None) -> None:
    """List the released models that --model and --detector accept by name, and what is cached.

    Pose models: HF dfki-av/spinepose (v2 = latest = the SIMSPINE fine-tune, v1 = SpineTrack; xlarge exists
    only as v1); detectors: HF saifkhichi96/opendetect RF-DETR, the one the spinepose package pairs with
    each pose size. The cache is the Hugging Face cache (HF_HOME / HF_HUB_CACHE).
    """
    from ..inference import hub

    for name in to_download:
        spec = hub.spec_for(name)
        path = hub.fetch(spec, revision)
        click.echo(f"{spec.name}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 verified)")
    sizes: dict[tuple[str, str], int] = {}
    if ask_hub:
        from ..download import remote_files

        for repo in (hub.POSE_REPO, hub.DETECTOR_REPO):
            _, files = remote_files(repo, revision, repo_type="model")
            sizes.update({(repo, f.name): f.size for f in files.values()})
    rows = [("name", "kind", "input", "params", "hub file", *(("download",) if ask_hub else ()), "cached")]
    for spec in hub.catalogue():
        cached = hub.cached_file(spec, revision)
        remote = sizes.get((spec.repo_id, spec.filename))
        rows.append((hub.short_name(spec), spec.kind + (f" {spec.version}" if spec.version else ""),
                     "x".join(map(str, spec.input_wh)), f"{spec.params_m:.1f} M" if spec.params_m else "-",
                     f"{spec.repo_id}/{spec.filename}",
                     *((f"{remote / 1e6:.1f} MB" if remote else "not on the Hub",) if ask_hub else ()),
                     f"{cached.stat().st_size / 1e6:.1f} MB" if cached else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo(f"cache: {hub.cache_dir()}")


@click.command("evaluate")
@click.option("--gt", "gt_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Ground-truth COCO keypoint file (needs area, bbox, iscrowd).")
@click.option("--pred", "pred_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO results JSON (image_id, category_id, keypoints, score).")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False),
              help='Write {"overall": {"AP": ...}, "body": {...}, ...} here.')
@click.option("--groups", default=",".join(("overall", "body", "feet", "spine")), show_default=True,
              help="Keypoint groups of the layout to evaluate, comma-separated.")
@click.option("--keep-unscored", is_flag=True,
              help="Keep predictions whose keypoint scores are all <= 0 (pycocotools does; xtcocotools and the "
                   "SpineTrack protocol drop them).")
@skeleton_option
def evaluate_cmd(gt_path: Path, pred_path: Path, json_path: Path | None, groups: str, keep_unscored: bool,
                 skeleton_name: str) -> None:
    """OKS AP/AR per keypoint group, as the SpineTrack authors evaluate (identical to pycocotools).

    Per group: keypoints and sigmas sliced, persons with no labelled point in the group ignored, the
    person's full area kept, maxDets 20.
    """
    from ..coco import read_persons, read_results
    from ..evaluate import STAT_NAMES, evaluate
    from ..io import save_json

    gt = read_persons(gt_path, skeleton=resolve_skeleton(skeleton_name))
    dt = read_results(pred_path, gt.skeleton)
    names = [g.strip() for g in groups.split(",") if g.strip()]
    try:
        res = evaluate(gt, dt, names, drop_unscored=not keep_unscored)
    except ValueError as e:
        raise BadInput(f"{pred_path}: {e}") from None
    if json_path is not None:
        save_json(json_path, res, indent=True)
    click.echo(f"{'group':10s}" + "".join(f"{n:>8s}" for n in STAT_NAMES))
    for g, m in res.items():
        click.echo(f"{g:10s}" + "".join(f"{m[n]:8.4f}" for n in STAT_NAMES))


@click.command("train")
@click.option("--train", "train_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Training COCO keypoint file.")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Images of the training file.")
@click.option("--val", "val_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Validation COCO keypoint file (OKS AP per group after every epoch).")
@click.option("--val-images", type=click.Path(path_type=Path, file_okay=False),
              help="Images of the validation file (default: --images).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder: model.pt, model.onnx, metrics.json.")
@click.option("--init", "init_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Start from this model: a checkpoint (model.pt of an earlier run) or an RTMPose / SpinePose "
                   "ONNX file (e.g. a released SpinePose from `spinetrack models --download`), which is fine-tuned "
                   "and exported back with its own I/O.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out after its last finished epoch (same settings; a fresh start when "
                   "--out has no checkpoint).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--lr", type=click.FloatRange(0, min_open=True),
              help="Peak learning rate (default: 3e-3 for the reference model, 1e-4 for an RTMPose / SpinePose).")
@click.option("--width", default=0.75, show_default=True, type=click.FloatRange(0.1, 4),
              help="Channel multiplier of a new model.")
@click.option("--max-samples", type=click.IntRange(1), help="Persons per epoch (a random subset).")
@click.option("--seed", default=0, show_default=True, type=int)
def train_cmd(train_path: Path, images_dir: Path, val_path: Path, val_images: Path | None, out_dir: Path,
              init_path: Path | None, resume: bool, epochs: int, batch_size: int, lr: float | None, width: float,
              max_samples: int | None, seed: int) -> None:
    """Train a SimCC pose model (plain PyTorch, the train extra, CPU) and export it to ONNX.

    The model: a new reference model (--width), a checkpoint, or an RTMPose / SpinePose ONNX file (--init),
    loaded into a plain-PyTorch RTMPose (CSPNeXt + RTMCC head) and checked against onnxruntime before
    training. Top-down crops with augmentation (scale, shift, rotation, mirroring with left/right swap,
    brightness), SimCC KL loss, OKS AP per group on the validation file after every epoch through
    `evaluate`; model.onnx keeps the SpinePose I/O contract (input [N, 3, H, W] -> simcc_x, simcc_y; an ONNX
    --init: its own names, dims and dynamic batch).
    """
    try:
        from ..train.model import ModelConfig
        from ..train.trainer import TrainConfig, train
    except ImportError as e:
        raise BadInput(f"the train extra is not installed ({e}): pip install 'spinetrack-tools[torch]'") from None
    train(train_path, images_dir, val_path, val_images or images_dir, out_dir,
          TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_samples=max_samples),
          ModelConfig(width=width), init_path, log=click.echo, resume=resume)
