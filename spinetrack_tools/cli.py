"""The ``spinetrack`` command: a thin click layer over the library.

Exit codes: 0 success / clean, 1 the check found errors, 2 bad input or usage.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from . import __version__
from .active_learning import DEFAULT_STRATEGY, STRATEGY_NAMES
from .findings import Report
from .io import InputError, dumps_json, save_json
from .skeleton import KNOWN_SKELETONS, SPINETRACK37, Skeleton

EXIT_ERRORS = 1
EXIT_BAD_INPUT = 2


class BadInput(click.ClickException):
    """One-line error, exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library input errors and unwritable outputs into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            raise BadInput(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise BadInput(f"{where}{e.strerror or e}") from None

    return wrapper


def _report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--report, --json and --skeleton, shared by the checking commands."""
    fn = _skeleton_option_only(fn)
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print the JSON report on stdout instead of the table.")(fn)
    return click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
                        help="Write the findings as JSON ({'summary': ..., 'findings': [...]}).")(fn)


def _skeleton_option_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--skeleton", "skeleton_name", default=SPINETRACK37.name, show_default=True,
        type=click.Choice([*KNOWN_SKELETONS, "auto"]),
        help="Keypoint layout the file must follow; 'auto' accepts the layout its category names.",
    )(fn)


def _resolve_skeleton(name: str) -> Skeleton | None:
    return None if name == "auto" else KNOWN_SKELETONS[name]


def _emit(report: Report, as_json: bool, report_path: Path | None) -> None:
    if report_path is not None:
        report.write_json(report_path)
    if as_json:
        sys.stdout.write(dumps_json(report.to_dict(), indent=True).decode() + "\n")
    else:
        click.echo(report.render_table(), nl=False)
        if report_path is not None:
            click.echo(f"report written to {report_path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spinetrack")
def main() -> None:
    """Tools for the SpineTrack 37-keypoint pose dataset: check, flag and curate COCO keypoint files.

    Exit codes: 0 clean, 1 the check found errors, 2 unreadable input or bad usage.
    """


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--images", "images_dir", type=click.Path(path_type=Path),
              help="Folder of the images: check that each file exists, decodes and has the listed size.")
@_report_options
@handles_errors
def validate(file: Path, images_dir: Path | None, report_path: Path | None, as_json: bool,
             skeleton_name: str) -> None:
    """Check FILE, a COCO keypoint JSON, against the SpineTrack format.

    Schema and integrity: top-level keys, unique ids, references between annotations, images and
    categories, keypoint names, keypoint array length and values (finite, visibility in {0,1,2},
    v=0 at (0,0), num_keypoints), boxes, area and iscrowd; with --images, the image files themselves.
    """
    from .validate import validate_file

    report = validate_file(file, skeleton=_resolve_skeleton(skeleton_name), images_dir=images_dir)
    _emit(report, as_json, report_path)
    raise SystemExit(EXIT_ERRORS if report.has_errors else 0)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--clean-out", "clean_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write FILE without the annotations flagged at error severity.")
@_report_options
@handles_errors
def flag(file: Path, report_path: Path | None, clean_path: Path | None, as_json: bool, skeleton_name: str) -> None:
    """Flag corrupted labels in FILE, a COCO keypoint JSON.

    Detectors: keypoints at (0,0) marked labelled, points far outside the image or their box,
    collapsed keypoints, duplicate annotations, spine chain out of order or detached from the torso,
    left/right swaps, limbs or skeletons at an impossible scale, heavy noise. Geometry is normalised by
    a body-size estimate and thresholds adapt to the file, so lying and upside-down people pass.
    """
    from .coco import load_coco, save_coco
    from .quality import flag as run_flag

    ds = load_coco(file, skeleton=_resolve_skeleton(skeleton_name))
    report = run_flag(ds)
    if clean_path is not None:
        bad = report.flagged_annotation_ids("error")
        keep = [int(a) not in bad for a in ds.ann_ids]
        save_coco(clean_path, ds.subset_dict(keep))
        report.stats["clean_out"] = {"path": str(clean_path), "kept": sum(keep), "removed": len(keep) - sum(keep)}
    _emit(report, as_json, report_path)
    if clean_path is not None and not as_json:
        c = report.stats["clean_out"]
        click.echo(f"clean file written to {clean_path}: kept {c['kept']}, removed {c['removed']} annotations")
    raise SystemExit(EXIT_ERRORS if report.has_errors else 0)


def _split_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


@main.command()
@click.option("--dest", type=click.Path(path_type=Path, file_okay=False), default=Path("spinetrack"),
              show_default=True, help="Data root: annotations/ and images/<split>/ go here.")
@click.option("--annotations-only", is_flag=True, help="Fetch only annotations.zip (24.8 MB).")
@click.option("--splits", multiple=True, callback=_split_list, metavar="SPLIT[,SPLIT]",
              help="Fetch only these splits' images (e.g. val2017), by HTTP range requests into images.zip "
                   "instead of the whole 19 GB archive. Repeatable or comma-separated.")
@click.option("--revision", default=None, help="Branch, tag or commit of the dataset (default: main).")
@click.option("--dry-run", is_flag=True, help="List what would be fetched and its size; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite files in the way that differ from the archive.")
@click.option("--keep-archive", is_flag=True, help="Keep images.zip after extracting it.")
@click.option("--repo", "repo_id", default=None, help="Dataset repository id (default saifkhichi96/spinetrack).")
@handles_errors
def download(dest: Path, annotations_only: bool, splits: list[str] | None, revision: str | None, dry_run: bool,
             force: bool, keep_archive: bool, repo_id: str | None) -> None:
    """Download SpineTrack from the Hugging Face Hub into DEST.

    Resumable (re-run after an interruption), verified (size and sha256 of each archive, CRC-32 of each
    extracted file), skips what is already complete, checks disk space first, and extracts safely (no
    paths outside DEST; files of yours are not overwritten without --force). The Hub endpoint comes from
    HF_ENDPOINT and the token from the usual places (HF_TOKEN, `hf auth login`). At the end every
    downloaded annotation file is validated and summarised.
    """
    from .download import REPO_ID
    from .download import download as run_download
    from .validate import validate_file

    result = run_download(dest, revision=revision, annotations_only=annotations_only, splits=splits,
                          dry_run=dry_run, force=force, keep_archive=keep_archive, repo_id=repo_id or REPO_ID,
                          echo=click.echo)
    if dry_run:
        return
    click.echo(f"downloaded SpineTrack @ {result.plan.commit[:12]} into {dest}")
    if result.range_requests:
        click.echo(f"images by range requests: {result.range_requests} requests, "
                   f"{result.range_bytes / 1e6:.1f} MB transferred")
    for path in result.annotation_files:
        report = validate_file(path)
        out = dest / ".spinetrack" / "reports" / f"validate_{path.stem}.json"
        report.write_json(out)
        s = report.summary()
        click.echo(f"validate {path.relative_to(dest)}: {s['images']} images, {s['annotations']} annotations, "
                   f"{s['errors']} errors, {s['warnings']} warnings (report: {out})")


@main.command("validate-biomech")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--deep", is_flag=True,
              help="Also fit the model's pose and a camera to every annotation the fast rules flag "
                   "(about 0.5 s each): per-keypoint residuals and coordinates pinned at range limits.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Calibrated thresholds (default: the shipped opensim_models/thresholds.json).")
@_report_options
@handles_errors
def validate_biomech(file: Path, deep: bool, thresholds_path: Path | None, report_path: Path | None,
                     as_json: bool, skeleton_name: str) -> None:
    """Check the biomechanical plausibility of FILE's annotations (no OpenSim needed).

    Fast 2D rules whose bounds were calibrated with OpenSim forward kinematics of the SpineTrack model
    over its ranges of motion and random cameras: spine chain order, curvature and lateral deviation,
    spine attached to the torso and C1 to the head, segment lengths as upper bounds, left/right
    consistency. Each finding carries the annotation's plausibility score (1 = plausible).
    """
    from .biomech.fit import deep_findings
    from .biomech.rules import Thresholds, check
    from .coco import load_coco

    ds = load_coco(file, skeleton=_resolve_skeleton(skeleton_name))
    try:
        thresholds = Thresholds.load(thresholds_path) if thresholds_path else Thresholds.load()
    except (OSError, ValueError, KeyError) as e:
        raise BadInput(f"{thresholds_path}: unreadable thresholds ({e})") from None
    report = check(ds, thresholds)
    if deep:
        rows = np.flatnonzero(np.isin(ds.ann_ids, list(report.flagged_annotation_ids("error"))))
        report.extend(deep_findings(ds, rows))
    _emit(report, as_json, report_path)
    raise SystemExit(EXIT_ERRORS if report.has_errors else 0)


@main.group()
def biomech() -> None:
    """The OpenSim model behind validate-biomech: calibration of its thresholds."""


@biomech.command()
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the thresholds (default: the shipped opensim_models/thresholds.json).")
@click.option("--images", "num_images", default=20000, show_default=True, type=click.IntRange(100),
              help="Synthetic images of plausible poses (1-3 persons each).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--noise", default=0.01, show_default=True, type=click.FloatRange(0, 0.2),
              help="Annotation noise, as a fraction of the torso length.")
@click.option("--target-rate", default=0.01, show_default=True, type=click.FloatRange(0.0001, 0.2),
              help="Share of plausible annotations allowed to fail some rule.")
@handles_errors
def calibrate(out: Path | None, num_images: int, seed: int, noise: float, target_rate: float) -> None:
    """Calibrate the 2D rules with OpenSim forward kinematics (needs the opensim extra)."""
    from .biomech.calibrate import calibrate as run_calibrate
    from .biomech.model import THRESHOLDS_PATH

    t = run_calibrate(num_images, seed=seed, noise=noise, target_rate=target_rate)
    path = out or THRESHOLDS_PATH
    save_json(path, t.to_json(), indent=True)
    click.echo(f"wrote {path}: {t.meta['annotations']} plausible annotations, "
               f"{t.meta['flag_rate_on_calibration_set']:.2%} of them fail some rule")


@main.command("predict")
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
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="onnxruntime threads.")
@click.option("--det-score", default=None, type=click.FloatRange(0, 1),
              help="Detector score threshold (default: 0.3 for RF-DETR, as the spinepose package; 0.5 for an "
                   "NMS-exported detector).")
@handles_errors
def predict_cmd(model_arg: str, images_dir: Path, boxes_path: Path | None, detector_arg: str | None,
                revision: str | None, det_revision: str | None, out_path: Path, batch_size: int, rgb: bool,
                score_mode: str, threads: int, det_score: float | None) -> None:
    """Pre-annotate images with a top-down ONNX pose model.

    Boxes come from a COCO file (--boxes) or a person detector (--detector); each is padded by 1.25,
    widened to the model's aspect ratio and cropped with an affine warp; outputs are decoded (SimCC
    argmax, or heatmaps with DARK refinement) and mapped back to image pixels (v1 SpinePose models then
    get the package's smoothed spine). The instance score is the box score times the mean of the keypoint
    confidences above 0.2, as the SpineTrack metric does. Released models are fetched into the Hugging
    Face cache (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE apply) and checked against the Hub's sha256.
    """
    from .coco import load_coco
    from .inference.hub import load_person_detector, load_pose_model, parse
    from .inference.predict import jobs_from_coco, jobs_from_folder, predict

    if (boxes_path is None) == (detector_arg is None):
        raise click.UsageError("give exactly one of --boxes and --detector")
    if not images_dir.is_dir():
        raise BadInput(f"{images_dir}: images folder not found")
    parse(model_arg, "pose")  # both names checked before anything is fetched
    if detector_arg is not None:
        parse(detector_arg, "detector")
    model = load_pose_model(model_arg, threads, revision)
    if boxes_path is not None:
        ds = load_coco(boxes_path, skeleton=None)
        jobs, detector = jobs_from_coco(ds, images_dir), None
    else:
        detector = load_person_detector(detector_arg, threads, det_score, det_revision)
        jobs = jobs_from_folder(images_dir)
    missing = [str(p) for p, _ in jobs if not p.is_file()]
    if missing:
        raise BadInput(f"{missing[0]}: image not found ({len(missing)} missing)")
    preds = predict(model, jobs, detector, batch_size=batch_size, rgb=rgb, score_mode=score_mode)
    preds.save(out_path)
    click.echo(f"{len(preds)} persons on {len(jobs)} images -> {out_path}")


@main.command("models")
@click.option("--download", "to_download", multiple=True, metavar="NAME",
              help="Fetch these models into the cache now (e.g. before working offline). Repeatable.")
@click.option("--hub", "ask_hub", is_flag=True, help="Also ask the Hub for each file's download size.")
@click.option("--revision", default=None, help="Branch, tag or commit (for --download, --hub and the cache column).")
@handles_errors
def models_cmd(to_download: tuple[str, ...], ask_hub: bool, revision: str | None) -> None:
    """List the released models that --model and --detector accept by name, and what is cached.

    Pose models: HF dfki-av/spinepose (v2 = latest = the SIMSPINE fine-tune, v1 = SpineTrack; xlarge exists
    only as v1); detectors: HF saifkhichi96/opendetect RF-DETR, the one the spinepose package pairs with
    each pose size. The cache is the Hugging Face cache (HF_HOME / HF_HUB_CACHE).
    """
    from .inference import hub

    for name in to_download:
        spec = hub.spec_for(name)
        path = hub.fetch(spec, revision)
        click.echo(f"{spec.name}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 verified)")
    sizes: dict[tuple[str, str], int] = {}
    if ask_hub:
        from .download import remote_files

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


@main.command("evaluate")
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
@_skeleton_option_only
@handles_errors
def evaluate_cmd(gt_path: Path, pred_path: Path, json_path: Path | None, groups: str, keep_unscored: bool,
                 skeleton_name: str) -> None:
    """OKS AP/AR per keypoint group, as the SpineTrack authors evaluate (identical to pycocotools).

    Per group: keypoints and sigmas sliced, persons with no labelled point in the group ignored, the
    person's full area kept, maxDets 20.
    """
    from .coco import load_coco
    from .evaluate import STAT_NAMES, detections_from_results, evaluate, ground_truth_from_coco
    from .io import load_json

    ds = load_coco(gt_path, skeleton=_resolve_skeleton(skeleton_name))
    results = load_json(pred_path)
    k = ds.skeleton.num_keypoints
    if not isinstance(results, list) or any(not isinstance(r, dict) for r in results):
        raise BadInput(f"{pred_path}: expected a JSON list of result objects")
    bad = next((i for i, r in enumerate(results) if not isinstance(r.get("keypoints"), list)
                or len(r["keypoints"]) != 3 * k or "image_id" not in r or "score" not in r), None)
    if bad is not None:
        raise BadInput(f"{pred_path}: result {bad} needs image_id, score and {3 * k} keypoint numbers")
    names = [g.strip() for g in groups.split(",") if g.strip()]
    try:
        res = evaluate(ground_truth_from_coco(ds), detections_from_results(results, k), ds.skeleton, names,
                       drop_unscored=not keep_unscored)
    except ValueError as e:
        raise BadInput(f"{pred_path}: {e}") from None
    if json_path is not None:
        save_json(json_path, res, indent=True)
    click.echo(f"{'group':10s}" + "".join(f"{n:>8s}" for n in STAT_NAMES))
    for g, m in res.items():
        click.echo(f"{g:10s}" + "".join(f"{m[n]:8.4f}" for n in STAT_NAMES))


@main.command("train")
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
@handles_errors
def train_cmd(train_path: Path, images_dir: Path, val_path: Path, val_images: Path | None, out_dir: Path,
              init_path: Path | None, epochs: int, batch_size: int, lr: float, width: float,
              max_samples: int | None, seed: int) -> None:
    """Train the reference SimCC model (plain PyTorch, the train extra) and export it to ONNX.

    Top-down crops with augmentation (scale, shift, rotation, mirroring with left/right swap,
    brightness), SimCC KL loss, OKS AP per group on the validation file after every epoch through
    `evaluate`; model.onnx keeps the SpinePose I/O contract (input [N, 3, 256, 192] -> simcc_x, simcc_y).
    """
    try:
        from .train.model import ModelConfig
        from .train.trainer import TrainConfig, train
    except ImportError as e:
        raise BadInput(f"the train extra is not installed ({e}): pip install 'spinetrack-tools[torch]'") from None
    train(train_path, images_dir, val_path, val_images or images_dir, out_dir,
          TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_samples=max_samples),
          ModelConfig(width=width), init_path, log=click.echo)


@main.group()
def labelstudio() -> None:
    """Human correction in Label Studio: a local server, push tasks with pre-annotations, pull corrections.

    Push and pull talk to --url / LABEL_STUDIO_URL with --api-key / LABEL_STUDIO_API_KEY (legacy token or
    personal access token); without them, to the server `spinetrack labelstudio start` runs from --dir.
    """


_LS_DIR = Path(".spinetrack") / "labelstudio"


def _ls_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--dir", "ls_dir", type=click.Path(path_type=Path, file_okay=False), default=_LS_DIR,
                        show_default=True, help="Folder of the local server (database, log, credentials).")(fn)


def _ls_connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--url", envvar="LABEL_STUDIO_URL", help="Label Studio URL (env LABEL_STUDIO_URL).")(fn)
    fn = click.option("--api-key", envvar="LABEL_STUDIO_API_KEY",
                      help="API key (env LABEL_STUDIO_API_KEY).")(fn)
    return _ls_dir_option(fn)


def _ls_connect(url: str | None, api_key: str | None, ls_dir: Path, require_root: bool = False) -> tuple[Any, Path]:
    from .labelstudio.client import connect

    return connect(url, api_key, ls_dir, require_root)


@labelstudio.command("start")
@_ls_dir_option
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder Label Studio may serve images from (their parent, at least).")
@click.option("--port", type=int, help="Port (default: a free one).")
@handles_errors
def ls_start(ls_dir: Path, data_root: Path, port: int | None) -> None:
    """Start a local Label Studio (127.0.0.1, SQLite in --dir) and print its URL, login and API key."""
    from .labelstudio.server import start

    info = start(ls_dir, data_root, port)
    click.echo(f"Label Studio is up at {info.url}\n  login: {info.username} / {info.password}\n"
               f"  export LABEL_STUDIO_URL={info.url} LABEL_STUDIO_API_KEY={info.token}\n"
               f"  local files served from {info.document_root}; log {info.log}")


@labelstudio.command("stop")
@_ls_dir_option
def ls_stop(ls_dir: Path) -> None:
    """Stop the server started from --dir (and only that one)."""
    from .labelstudio.server import stop

    click.echo("stopped" if stop(ls_dir) else f"no server of ours is running from {ls_dir}")


@labelstudio.command("status")
@_ls_dir_option
@click.option("--json", "as_json", is_flag=True)
def ls_status(ls_dir: Path, as_json: bool) -> None:
    """Report the server started from --dir."""
    from .labelstudio.server import status

    st = status(ls_dir)
    if as_json:
        click.echo(dumps_json(st, indent=True).decode())
    elif st["running"]:
        click.echo(f"running at {st['url']} (pid {st['pid']}, {'healthy' if st['healthy'] else 'not answering'})")
    else:
        click.echo(f"not running (folder {ls_dir})")
    raise SystemExit(0 if st["running"] else 1)


@labelstudio.command("config")
@_skeleton_option_only
def ls_config(skeleton_name: str) -> None:
    """Print the labeling config generated from the skeleton (annotation/labeling_config.xml)."""
    from .labelstudio.config import labeling_config

    click.echo(labeling_config(_resolve_skeleton(skeleton_name) or SPINETRACK37), nl=False)


@labelstudio.command("push")
@click.argument("coco_path", metavar="COCO.json", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of the images, inside Label Studio's local-files root.")
@click.option("--project", required=True, help="Project title (created when missing).")
@click.option("--predictions", "pred_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Model predictions (spinetrack predict output) to show; default: the file's own keypoints.")
@click.option("--model-version", default="spinetrack", show_default=True,
              help="model_version of the predictions; the project switches to it so annotators see them.")
@click.option("--record", type=click.Path(path_type=Path, dir_okay=False),
              help="Write sample_id -> task id of the pushed tasks here (JSON).")
@_ls_connection_options
@handles_errors
def ls_push(coco_path: Path, images_dir: Path, project: str, pred_path: Path | None, model_version: str,
            record: Path | None, url: str | None, api_key: str | None, ls_dir: Path) -> None:
    """Send COCO.json's images to Label Studio as tasks with pre-annotations (no duplicates on re-push)."""
    from .coco import load_coco
    from .io import load_json
    from .labelstudio.client import image_url, push
    from .labelstudio.convert import persons_from_results, to_labelstudio

    ds = load_coco(coco_path, skeleton=None)
    persons = None
    if pred_path is not None:
        results = load_json(pred_path)
        if not isinstance(results, list):
            raise BadInput(f"{pred_path}: expected a JSON list of results")
        sizes = dict(zip(ds.images["id"].tolist(), zip(ds.images["width"].tolist(), ds.images["height"].tolist())))
        persons = persons_from_results(results, ds.skeleton.num_keypoints, sizes)
    conn, root = _ls_connect(url, api_key, ls_dir, require_root=True)
    tasks = to_labelstudio(ds.raw, persons, image_url(root, images_dir), model_version, ds.skeleton)
    res = push(conn, project, tasks, images_dir, root, model_version, ds.skeleton)
    if record is not None:
        save_json(record, {**res.existing, **res.created}, indent=True)
    click.echo(f"project {project!r} (id {res.project}): {len(res.created)} tasks created, "
               f"{len(res.existing)} already there; model_version {model_version}")


@labelstudio.command("pull")
@click.option("--project", required=True, help="Project title.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file of the corrected labels; an earlier pull there is updated incrementally.")
@click.option("--edits", "edits_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the per-keypoint edits (kept / moved / added / removed, distance in px) as JSON.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write findings (keypoints without a person, duplicates) as JSON.")
@_ls_connection_options
@handles_errors
def ls_pull(project: str, out_path: Path, edits_path: Path | None, report_path: Path | None, url: str | None,
            api_key: str | None, ls_dir: Path) -> None:
    """Fetch the annotated tasks (latest non-cancelled annotation each) as COCO keypoints."""
    from .labelstudio.client import pull
    from .labelstudio.convert import merge_pulls

    conn, _ = _ls_connect(url, api_key, ls_dir)
    previous = None
    if out_path.is_file():
        from .io import load_json

        previous = load_json(out_path)
    since = ((previous or {}).get("info") or {}).get("labelstudio_watermark")
    res = pull(conn, project, since, first_new_id=1 + max((a["id"] for a in (previous or {}).get("annotations", [])),
                                                           default=0))
    coco = merge_pulls(previous, res.coco, res.watermark)
    save_json(out_path, coco)
    if edits_path is not None:
        save_json(edits_path, res.edits, indent=True)
    report = Report(str(out_path), res.findings)
    if report_path is not None:
        report.write_json(report_path)
    moved = [e["distance_px"] for e in res.edits if e["edit"] == "moved"]
    counts = {k: sum(e["edit"] == k for e in res.edits) for k in ("kept", "moved", "added", "removed")}
    click.echo(f"{res.tasks} annotated tasks{' since ' + since if since else ''} -> {out_path} "
               f"({len(coco['images'])} images, {len(coco['annotations'])} persons in all)")
    click.echo("keypoint edits: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
               (f"; mean correction {sum(moved) / len(moved):.1f} px" if moved else ""))
    if res.findings:
        click.echo(report.render_table(), nl=False)


@main.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of the images.")
@click.option("--pred", "preds", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Prediction file(s) (spinetrack predict output), each a field pred_<name>. Repeatable.")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Report(s) of validate / flag / validate-biomech: findings become tags. Repeatable.")
@click.option("--workspace", "ws_path", type=click.Path(path_type=Path, file_okay=False),
              help="Active-learning workspace: each sample's round and status become fields (al_round, al_status).")
@click.option("--name", help="Dataset name (default: spinetrack-<file stem>).")
@click.option("--port", default=5151, show_default=True, type=int, help="Port of the FiftyOne App.")
@click.option("--no-launch", is_flag=True, help="Only build the dataset.")
@_skeleton_option_only
@handles_errors
def browse(file: Path, images_dir: Path, preds: tuple[Path, ...], reports: tuple[Path, ...], ws_path: Path | None,
           name: str | None, port: int, no_launch: bool, skeleton_name: str) -> None:
    """Browse labels, predictions and findings in FiftyOne (a persistent dataset, the App on 127.0.0.1).

    Ground truth per person with the 37-point skeleton (spine chain as one polyline) and visibility,
    boxes, predictions with per-point confidence and OKS against the ground truth, findings as tags and
    label attributes; saved views: flagged, failed-biomech, worst-oks.
    """
    from .browse import build, launch
    from .coco import load_coco

    ds = load_coco(file, skeleton=_resolve_skeleton(skeleton_name))
    fields = None
    if ws_path is not None:
        from .active_learning.workspace import Workspace

        fields = Workspace.open(ws_path).sample_fields()
    dataset = build(ds, images_dir, preds, reports, name, sample_fields=fields, echo=click.echo)
    if no_launch:
        return
    click.echo(f"FiftyOne App: http://127.0.0.1:{port}/datasets/{dataset.name} (Ctrl-C to stop)")
    launch(dataset.name, port)


@main.command("init")
@click.argument("workspace", type=click.Path(path_type=Path, file_okay=False))
@click.option("--pool", "pool_images", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of the images (the unlabelled pool and the labelled set).")
@click.option("--boxes", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file listing the pool images and their person boxes.")
@click.option("--labeled", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The labelled set so far (dataset version 0).")
@click.option("--val", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Validation set.")
@click.option("--val-images", type=click.Path(path_type=Path, file_okay=False), help="Its images (default --pool).")
@click.option("--model", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The current ONNX model (for example models/spinetrack_synth.onnx).")
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False),
              help="Its training checkpoint, to fine-tune from (models/spinetrack_synth.pt).")
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True, type=click.Choice(STRATEGY_NAMES))
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(1), help="Images per round.")
@click.option("--project", help="Label Studio project title (default spinetrack-al-<workspace name>).")
@click.option("--labelstudio-url", default="", help="Label Studio URL (default: LABEL_STUDIO_URL, or the "
                                                      "local server of the workspace).")
@click.option("--retrain", help="Retrain command template with {train} {val} {images} {val_images} {init} "
                                "{out} {python} (default: the reference trainer).")
@handles_errors
def init_cmd(workspace: Path, pool_images: Path, boxes: Path, labeled: Path, val: Path, val_images: Path | None,
             model: Path, checkpoint: Path | None, strategy: str, batch_size: int, project: str | None,
             labelstudio_url: str, retrain: str | None) -> None:
    """Create an active-learning workspace: config.toml and the state database."""
    from .active_learning.workspace import DEFAULT_RETRAIN, init

    ws = init(workspace, pool_images, boxes, labeled, val, model, checkpoint, val_images, strategy, batch_size,
              project, retrain or DEFAULT_RETRAIN, labelstudio_url)
    c = ws.counts()
    click.echo(f"workspace {ws.path}: {c.get('pool', 0)} pool images, {c.get('labelled', 0)} labelled; "
               f"edit {ws.path / 'config.toml'} to change the strategy, batch size or hooks")


@main.command("al-round")
@click.option("--iter", "n", required=True, type=click.IntRange(1), help="Round number (1, 2, ...).")
@click.option("--workspace", "ws_path", default=Path("."), show_default=True,
              type=click.Path(path_type=Path, file_okay=False))
@click.option("--wait", is_flag=True, help="Poll Label Studio until the batch is annotated.")
@click.option("--until", type=click.Choice(["select", "predict", "push", "pull", "gate", "merge", "retrain",
                                            "evaluate"]), help="Stop after this stage.")
@handles_errors
def al_round(n: int, ws_path: Path, wait: bool, until: str | None) -> None:
    """Run active-learning round N: select, predict, push, pull, gate, merge, retrain, evaluate.

    Every stage is checkpointed in the workspace: kill the command anywhere and run it again. Without
    --wait the command reports annotation progress and exits 0 until the batch is done.
    """
    from .active_learning.rounds import run_round
    from .active_learning.workspace import Workspace

    ws = Workspace.open(ws_path)
    finished = run_round(ws, n, wait=wait, until=until, echo=click.echo)
    click.echo(f"round {n}: {'done' if finished else 'waiting for annotations'} (stage "
               f"{ws.stage(n) or 'none'})")


@main.command("status")
@click.option("--workspace", "ws_path", default=Path("."), show_default=True,
              type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def status_cmd(ws_path: Path, as_json: bool) -> None:
    """Rounds, sample counts and AP per group of a workspace."""
    from .active_learning.workspace import Workspace

    ws = Workspace.open(ws_path)
    with ws.db() as db:
        rounds = [dict(r) for r in db.execute("SELECT round, stage, model_version, dataset FROM rounds ORDER BY round")]
        metrics = [dict(r) for r in db.execute("SELECT * FROM metrics ORDER BY round, grp")]
    out = {"workspace": str(ws.path), "samples": ws.counts(), "rounds": rounds, "metrics": metrics,
           "learning_curve": str(ws.path / "learning_curve.png")}
    if as_json:
        click.echo(dumps_json(out, indent=True).decode())
        return
    click.echo(f"workspace {ws.path}: " + ", ".join(f"{k} {v}" for k, v in sorted(out["samples"].items())))
    for r in rounds:
        click.echo(f"  round {r['round']}: stage {r['stage']}, dataset version {r['dataset']}")
    groups = sorted({m["grp"] for m in metrics})
    if metrics:
        click.echo(f"  {'round':>5s} {'labelled':>8s} " + " ".join(f"{g:>8s}" for g in groups))
        for rnd in sorted({m["round"] for m in metrics}):
            row = {m["grp"]: m for m in metrics if m["round"] == rnd}
            click.echo(f"  {rnd:5d} {next(iter(row.values()))['labelled_images']:8d} " +
                       " ".join(f"{row[g]['ap']:8.3f}" if g in row else " " * 8 for g in groups))
        click.echo(f"  learning curve: {out['learning_curve']}")


@main.command("annotate-sim")
@click.option("--workspace", "ws_path", default=Path("."), show_default=True,
              type=click.Path(path_type=Path, file_okay=False))
@click.option("--truth", "truth_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="COCO file with the true keypoints of the pool.")
@click.option("--tolerance", default=0.05, show_default=True, type=click.FloatRange(0),
              help="A predicted point within this fraction of the box size is accepted as it is.")
@handles_errors
def annotate_sim(ws_path: Path, truth_path: Path, tolerance: float) -> None:
    """SIMULATED annotator (demos, benchmarks): annotate the open tasks from the true keypoints."""
    from .active_learning.rounds import connect
    from .active_learning.simulate import annotate
    from .active_learning.workspace import Workspace
    from .io import load_json

    ws = Workspace.open(ws_path)
    conn, _ = connect(ws)
    n = annotate(conn, ws.config["labelstudio"]["project"], load_json(truth_path), tolerance=tolerance)
    click.echo(f"simulated annotator: {n} tasks annotated")


def _parse_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        lo, _, hi = value.partition("-")
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise click.BadParameter("expected A-B, e.g. 1-3") from None
    if not 1 <= a <= b:
        raise click.BadParameter("expected 1 <= A <= B")
    return a, b


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder: images/*.jpg, annotations.json (and corruptions.json with --corrupt).")
@click.option("--images", "num_images", default=100, show_default=True, type=click.IntRange(1),
              help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (output is deterministic).")
@click.option("--persons-per-image", default="1-3", show_default=True, callback=_parse_range,
              help="Persons per image, as A-B.")
@click.option("--corrupt", "fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of annotations to corrupt; the truth goes to corruptions.json.")
@click.option("--no-images", is_flag=True, help="Write the keypoints only.")
@handles_errors
def synth(out_dir: Path, num_images: int, seed: int, persons_per_image: tuple[int, int], fraction: float,
          no_images: bool) -> None:
    """Generate a synthetic SpineTrack dataset (the SpineTrack-Unreal analogue).

    Poses are sampled inside the OpenSim model's ranges of motion (standing, sitting, bending, lying,
    inverted), the 37 markers come from OpenSim forward kinematics (the model's numpy export without
    the opensim extra), random perspective cameras project them, and each image shows shaded figures
    with a back line and vertebral marks over a varied background. Deterministic for a seed.
    """
    from . import synth as gen

    coco = gen.generate(num_images, seed=seed, persons_per_image=persons_per_image,
                        image_dir=None if no_images else out_dir / "images")
    if fraction > 0:
        coco, truth = gen.corrupt(coco, fraction, seed=seed + 1)
        save_json(out_dir / "corruptions.json", truth, indent=True)
    save_json(out_dir / "annotations.json", coco)
    click.echo(f"wrote {len(coco['annotations'])} annotations on {num_images} images to {out_dir / 'annotations.json'}")


@main.command()
@click.option("--dir", "work_dir", default=Path("spinetrack-quickstart"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False), help="Folder for everything the demo writes.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1), help="Active-learning rounds.")
@click.option("--images", "num_images", default=500, show_default=True, type=click.IntRange(20),
              help="Synthetic pool images.")
@click.option("--batch-size", default=60, show_default=True, type=click.IntRange(1), help="Images per round.")
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True, type=click.Choice(STRATEGY_NAMES))
@click.option("--seed", default=0, show_default=True, type=int)
@handles_errors
def quickstart(work_dir: Path, rounds: int, num_images: int, batch_size: int, strategy: str, seed: int) -> None:
    """Run the demo: an active-learning loop on synthetic data, end to end.

    Synthesise a pool (rendered images with known keypoints), validate and flag it, start Label Studio,
    create a workspace with the shipped model, run the rounds with the SIMULATED annotator correcting
    pre-annotations through Label Studio, build the FiftyOne dataset, and print AP per round.
    """
    from .quickstart import run

    run(work_dir, images=num_images, rounds=rounds, batch_size=batch_size, seed=seed, strategy=strategy,
        echo=click.echo)
