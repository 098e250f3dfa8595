"""The ``spinetrack`` command: a thin click layer over the library.

Exit codes: 0 success / clean, 1 the check found errors, 2 bad input or usage.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click

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
              help="Output folder: annotations.json (and corruptions.json with --corrupt).")
@click.option("--images", "num_images", default=100, show_default=True, type=click.IntRange(1),
              help="Number of images.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (output is deterministic).")
@click.option("--persons-per-image", default="1-3", show_default=True, callback=_parse_range,
              help="Persons per image, as A-B.")
@click.option("--corrupt", "fraction", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of annotations to corrupt; the truth goes to corruptions.json.")
def synth(out_dir: Path, num_images: int, seed: int, persons_per_image: tuple[int, int], fraction: float) -> None:
    """Generate synthetic SpineTrack keypoints: posed within joint limits, projected by random cameras."""
    from . import synth as gen

    coco = gen.generate(num_images, seed=seed, persons_per_image=persons_per_image)
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
