"""Models: ``predict`` (pre-annotation), ``evaluate`` (OKS AP per group) and ``train``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import BadInput, resolve_skeleton, skeleton_option


@click.command("predict")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Top-down pose model in ONNX (SpinePose / RTMPose SimCC, or HRNet-style heatmaps).")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of the images.")
@click.option("--boxes", "boxes_path", type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file whose person boxes (and images) to use.")
@click.option("--detector", "detector_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Person detector ONNX with its NMS exported (dets [1, N, 5]); runs on every image in --images.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO results JSON: image_id, category_id, keypoints (x, y, confidence), score.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option("--rgb", is_flag=True, help="Feed RGB crops (the SpinePose package feeds BGR, the default).")
@click.option("--score", "score_mode", type=click.Choice(["mean", "min"]), default="mean", show_default=True,
              help="Keypoint confidence from the two SimCC maxima: their mean (SpinePose) or min (mmpose).")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="onnxruntime threads.")
@click.option("--det-score", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Detector score threshold.")
def predict_cmd(model_path: Path, images_dir: Path, boxes_path: Path | None, detector_path: Path | None,
                out_path: Path, batch_size: int, rgb: bool, score_mode: str, threads: int, det_score: float) -> None:
    """Pre-annotate images with a top-down ONNX pose model.

    Boxes come from a COCO file (--boxes) or a person detector (--detector); each is padded by 1.25,
    widened to the model's aspect ratio and cropped with an affine warp; outputs are decoded (SimCC
    argmax, or heatmaps with DARK refinement) and mapped back to image pixels. The instance score is
    the box score times the mean of the keypoint confidences above 0.2, as the SpineTrack metric does.
    """
    from ..coco import read_persons
    from ..inference.model import Detector, PoseModel
    from ..inference.predict import jobs_from_coco, jobs_from_folder, predict
    from ..io import save_json

    if (boxes_path is None) == (detector_path is None):
        raise click.UsageError("give exactly one of --boxes and --detector")
    if not images_dir.is_dir():
        raise BadInput(f"{images_dir}: images folder not found")
    model = PoseModel.load(model_path, threads)
    skeleton = None
    if boxes_path is not None:
        ds = read_persons(boxes_path)
        jobs, detector, skeleton = jobs_from_coco(ds, images_dir), None, ds.skeleton
    else:
        jobs, detector = jobs_from_folder(images_dir), Detector.load(detector_path, threads, det_score)
    missing = [str(p) for p, _ in jobs if not p.is_file()]
    if missing:
        raise BadInput(f"{missing[0]}: image not found ({len(missing)} missing)")
    preds = predict(model, jobs, skeleton, detector, batch_size=batch_size, rgb=rgb, score_mode=score_mode)
    save_json(out_path, preds.to_results())
    click.echo(f"{len(preds)} persons on {len(jobs)} images -> {out_path}")


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
              help="Start from this checkpoint (model.pt of an earlier run).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--width", default=0.75, show_default=True, type=click.FloatRange(0.1, 4),
              help="Channel multiplier of a new model.")
@click.option("--max-samples", type=click.IntRange(1), help="Persons per epoch (a random subset).")
@click.option("--seed", default=0, show_default=True, type=int)
def train_cmd(train_path: Path, images_dir: Path, val_path: Path, val_images: Path | None, out_dir: Path,
              init_path: Path | None, epochs: int, batch_size: int, lr: float, width: float,
              max_samples: int | None, seed: int) -> None:
    """Train the reference SimCC model (plain PyTorch, the train extra) and export it to ONNX.

    Top-down crops with augmentation (scale, shift, rotation, mirroring with left/right swap,
    brightness), SimCC KL loss, OKS AP per group on the validation file after every epoch through
    `evaluate`; model.onnx keeps the SpinePose I/O contract (input [N, 3, 256, 192] -> simcc_x, simcc_y).
    """
    try:
        from ..train.model import ModelConfig
        from ..train.trainer import TrainConfig, train
    except ImportError as e:
        raise BadInput(f"the train extra is not installed ({e}): pip install 'spinetrack-tools[torch]'") from None
    train(train_path, images_dir, val_path, val_images or images_dir, out_dir,
          TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_samples=max_samples),
          ModelConfig(width=width), init_path, log=click.echo)
