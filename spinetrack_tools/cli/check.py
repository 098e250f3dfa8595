"""Checking labels: ``validate``, ``flag``, ``validate-biomech`` and the calibration behind it."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_ERRORS, BadInput, emit, noise_option, report_options, resolve_skeleton

NOISE_LEVELS = (0.1, 0.2, 0.35, 0.5, 0.75)  # biomech.calibrate.NOISE_LEVELS (kept here: --help stays light)


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--images", "images_dir", type=click.Path(path_type=Path),
              help="Folder of the images: check that each file exists, decodes and has the listed size.")
@report_options
def validate(file: Path, images_dir: Path | None, report_path: Path | None, as_json: bool,
             skeleton_name: str) -> None:
    """Check FILE, a COCO keypoint JSON, against the SpineTrack format.

    Schema and integrity: top-level keys, unique ids, references between annotations, images and
    categories, keypoint names, keypoint array length and values (finite, visibility in {0,1,2},
    v=0 at (0,0), num_keypoints), boxes, area and iscrowd; with --images, the image files themselves.
    """
    from ..validate import validate_file

    report = validate_file(file, skeleton=resolve_skeleton(skeleton_name), images_dir=images_dir)
    emit(report, as_json, report_path)
    raise SystemExit(EXIT_ERRORS if report.has_errors else 0)


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--clean-out", "clean_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write FILE without the annotations flagged at error severity.")
@noise_option
@report_options
def flag(file: Path, report_path: Path | None, clean_path: Path | None, noise: float | None, as_json: bool,
         skeleton_name: str) -> None:
    """Flag corrupted labels in FILE, a COCO keypoint JSON.

    Detectors: keypoints at (0,0) marked labelled, points far outside the image or their box,
    collapsed keypoints, duplicate annotations, spine chain out of order or detached from the torso,
    left/right swaps, limbs or skeletons at an impossible scale, heavy noise. Geometry is normalised by
    a body-size estimate and thresholds adapt to the file, so lying and upside-down people pass.
    """
    from ..coco import load_coco, save_coco
    from ..quality import flag as run_flag

    ds = load_coco(file, skeleton=resolve_skeleton(skeleton_name))
    report = run_flag(ds.persons, noise=noise)
    if clean_path is not None:
        bad = report.flagged_annotation_ids("error")
        keep = [int(a) not in bad for a in ds.persons.ann_ids]
        save_coco(clean_path, ds.subset_dict(keep))
        report.stats["clean_out"] = {"path": str(clean_path), "kept": sum(keep), "removed": len(keep) - sum(keep)}
    emit(report, as_json, report_path)
    if clean_path is not None and not as_json:
        c = report.stats["clean_out"]
        click.echo(f"clean file written to {clean_path}: kept {c['kept']}, removed {c['removed']} annotations")
    raise SystemExit(EXIT_ERRORS if report.has_errors else 0)


@click.command("validate-biomech")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--deep", is_flag=True,
              help="Also fit the model's pose and a camera to every annotation the fast rules flag "
                   "(batched, about 0.1-0.3 s each): per-keypoint residuals and coordinates pinned at range limits.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Calibrated thresholds (default: the shipped opensim_models/thresholds.json).")
@noise_option
@report_options
def validate_biomech(file: Path, deep: bool, thresholds_path: Path | None, noise: float | None,
                     report_path: Path | None, as_json: bool, skeleton_name: str) -> None:
    """Check the biomechanical plausibility of FILE's annotations (no OpenSim needed).

    Fast 2D rules whose bounds were calibrated with OpenSim forward kinematics of the SpineTrack model
    over its ranges of motion and random cameras: spine chain order, curvature and lateral deviation,
    spine attached to the torso and C1 to the head, segment lengths as upper bounds, left/right
    consistency. Each finding carries the annotation's plausibility score (1 = plausible).
    """
    from ..biomech.fit import deep_findings
    from ..biomech.rules import Thresholds, check
    from ..coco import load_coco

    import numpy as np

    ds = load_coco(file, skeleton=resolve_skeleton(skeleton_name)).persons
    try:
        thresholds = Thresholds.load(thresholds_path) if thresholds_path else Thresholds.load()
    except (OSError, ValueError, KeyError) as e:
        raise BadInput(f"{thresholds_path}: unreadable thresholds ({e})") from None
    report = check(ds, thresholds, noise)
    if deep:
        rows = np.flatnonzero(np.isin(ds.ann_ids, list(report.flagged_annotation_ids("error"))))
        report.extend(deep_findings(ds, rows, noise=noise))
    emit(report, as_json, report_path)
    raise SystemExit(EXIT_ERRORS if report.has_errors else 0)


@click.group()
def biomech() -> None:
    """The OpenSim model behind validate-biomech: calibration of its thresholds."""


@biomech.command()
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the thresholds (default: the shipped opensim_models/thresholds.json).")
@click.option("--images", "num_images", default=20000, show_default=True, type=click.IntRange(100),
              help="Synthetic images of plausible poses (1-3 persons each).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--noise-levels", default=",".join(map(str, NOISE_LEVELS)), show_default=True,
              help="Annotation noise levels to calibrate the widening for (x sigma_k x sqrt(area)), comma-separated.")
@click.option("--target-rate", default=0.01, show_default=True, type=click.FloatRange(0.0001, 0.2),
              help="Share of plausible annotations allowed to fail some rule, at every noise level.")
def calibrate(out: Path | None, num_images: int, seed: int, noise_levels: str, target_rate: float) -> None:
    """Calibrate the 2D rules over a population (ANSUR II builds, annotator habits, noise levels) posed within
    the OpenSim model's ranges of motion."""
    from ..biomech.calibrate import calibrate as run_calibrate
    from ..biomech.model import THRESHOLDS_PATH
    from ..io import save_json

    try:
        levels = tuple(sorted(float(x) for x in noise_levels.split(",") if x.strip()))
    except ValueError:
        raise click.BadParameter("expected numbers, e.g. 0.1,0.2,0.5", param_hint="--noise-levels") from None
    t = run_calibrate(num_images, seed=seed, noise_levels=levels, target_rate=target_rate)
    path = out or THRESHOLDS_PATH
    save_json(path, t.to_json(), indent=True)
    click.echo(f"wrote {path}: {t.meta['annotations']} plausible annotations, "
               f"{t.meta['flag_rate_on_calibration_set']:.2%} of them fail some rule")
