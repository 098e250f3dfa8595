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
    fn = click.option(
        "--skeleton", "skeleton_name", default=SPINETRACK37.name, show_default=True,
        type=click.Choice([*KNOWN_SKELETONS, "auto"]),
        help="Keypoint layout the file must follow; 'auto' accepts the layout its category names.",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print the JSON report on stdout instead of the table.")(fn)
    return click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
                        help="Write the findings as JSON ({'summary': ..., 'findings': [...]}).")(fn)


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
@click.option("--images", "num_images", default=2000, show_default=True, type=click.IntRange(10),
              help="Synthetic images to generate.")
@click.option("--seed", default=0, show_default=True, type=int)
@handles_errors
def quickstart(work_dir: Path, num_images: int, seed: int) -> None:
    """Run the demo: synthesise a dataset with known corruptions, validate it, flag it, score the flags."""
    from .quickstart import run

    run(work_dir, num_images=num_images, seed=seed, echo=click.echo)
