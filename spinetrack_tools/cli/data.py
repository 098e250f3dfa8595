"""Data: ``download`` (the dataset from the Hub) and ``synth`` (synthetic data with known truth)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import split_list


@click.command()
@click.option("--dest", type=click.Path(path_type=Path, file_okay=False), default=Path("spinetrack"),
              show_default=True, help="Data root: annotations/ and images/<split>/ go here.")
@click.option("--annotations-only", is_flag=True, help="Fetch only annotations.zip (24.8 MB).")
@click.option("--splits", multiple=True, callback=split_list, metavar="SPLIT[,SPLIT]",
              help="Fetch only these splits' images (e.g. val2017), by HTTP range requests into images.zip "
                   "instead of the whole 19 GB archive. Repeatable or comma-separated.")
@click.option("--revision", default=None, help="Branch, tag or commit of the dataset (default: main).")
@click.option("--dry-run", is_flag=True, help="List what would be fetched and its size; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite files in the way that differ from the archive.")
@click.option("--keep-archive", is_flag=True, help="Keep images.zip after extracting it.")
@click.option("--repo", "repo_id", default=None, help="Dataset repository id (default saifkhichi96/spinetrack).")
def download(dest: Path, annotations_only: bool, splits: list[str] | None, revision: str | None, dry_run: bool,
             force: bool, keep_archive: bool, repo_id: str | None) -> None:
    """Download SpineTrack from the Hugging Face Hub into DEST.

    Resumable (re-run after an interruption), verified (size and sha256 of each archive, CRC-32 of each
    extracted file), skips what is already complete, checks disk space first, and extracts safely (no
    paths outside DEST; files of yours are not overwritten without --force). The Hub endpoint comes from
    HF_ENDPOINT and the token from the usual places (HF_TOKEN, `hf auth login`). At the end every
    downloaded annotation file is validated and summarised.
    """
    from ..download import REPO_ID
    from ..download import download as run_download
    from ..validate import validate_file

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


def _parse_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        lo, _, hi = value.partition("-")
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise click.BadParameter("expected A-B, e.g. 1-3") from None
    if not 1 <= a <= b:
        raise click.BadParameter("expected 1 <= A <= B")
    return a, b


@click.command()
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
def synth(out_dir: Path, num_images: int, seed: int, persons_per_image: tuple[int, int], fraction: float,
          no_images: bool) -> None:
    """Generate a synthetic SpineTrack dataset (the SpineTrack-Unreal analogue).

    Poses are sampled inside the OpenSim model's ranges of motion (standing, sitting, bending, lying,
    inverted), the 37 markers come from OpenSim forward kinematics (the model's numpy export without
    the opensim extra), random perspective cameras project them, and each image shows shaded figures
    with a back line and vertebral marks over a varied background. Deterministic for a seed.
    """
    from .. import synth as gen
    from ..io import save_json

    coco = gen.generate(num_images, seed=seed, persons_per_image=persons_per_image,
                        image_dir=None if no_images else out_dir / "images")
    if fraction > 0:
        coco, truth = gen.corrupt(coco, fraction, seed=seed + 1)
        save_json(out_dir / "corruptions.json", truth, indent=True)
    save_json(out_dir / "annotations.json", coco)
    click.echo(f"wrote {len(coco['annotations'])} annotations on {num_images} images to {out_dir / 'annotations.json'}")
