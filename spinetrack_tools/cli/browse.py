"""``spinetrack browse``: labels, predictions and findings in FiftyOne."""

from __future__ import annotations

from pathlib import Path

import click

from .common import resolve_skeleton, skeleton_option


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of the images.")
@click.option("--pred", "preds", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Prediction file(s) (spinetrack predict output), each a field pred_<name>. Repeatable.")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Report(s) of validate / flag / validate-biomech: findings become tags. Repeatable.")
@click.option("--workspace", "ws_path", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Active-learning workspace: each sample's round and status become fields (al_round, al_status).")
@click.option("--name", help="Dataset name (default: spinetrack-<file stem>).")
@click.option("--port", default=5151, show_default=True, type=int, help="Port of the FiftyOne App.")
@click.option("--no-launch", is_flag=True, help="Only build the dataset.")
@click.option("--database-uri", envvar="FIFTYONE_DATABASE_URI",
              help="MongoDB server to keep the datasets in, e.g. mongodb://127.0.0.1:27017 (env "
                   "FIFTYONE_DATABASE_URI); default: FiftyOne's own local database.")
@skeleton_option
def browse(file: Path, images_dir: Path, preds: tuple[Path, ...], reports: tuple[Path, ...], ws_path: Path | None,
           name: str | None, port: int, no_launch: bool, database_uri: str | None, skeleton_name: str) -> None:
    """Browse labels, predictions and findings in FiftyOne (a persistent dataset, the App on 127.0.0.1).

    Ground truth per person with the 37-point skeleton (spine chain as one polyline) and visibility,
    boxes, predictions with per-point confidence and OKS against the ground truth, findings as tags and
    label attributes; saved views: flagged, failed-biomech, worst-oks.
    """
    from ..browse import build, launch, use_database
    from ..coco import load_coco

    if database_uri:
        use_database(database_uri)

    ds = load_coco(file, skeleton=resolve_skeleton(skeleton_name)).persons
    fields = None
    if ws_path is not None:
        from ..active_learning.workspace import Workspace

        fields = Workspace.open(ws_path).sample_fields()
    dataset = build(ds, images_dir, preds, reports, name, sample_fields=fields, echo=click.echo)
    if no_launch:
        return
    click.echo(f"FiftyOne App: http://127.0.0.1:{port}/datasets/{dataset.name} (Ctrl-C to stop)")
    launch(dataset.name, port)
