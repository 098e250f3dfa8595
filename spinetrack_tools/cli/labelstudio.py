"""``spinetrack labelstudio``: a local server, push tasks with pre-annotations, pull corrections."""

from __future__ import annotations

from pathlib import Path

import click

from ..skeleton import SPINETRACK37
from .common import ls_connection_options, ls_dir_option, resolve_skeleton, skeleton_option


@click.group()
def labelstudio() -> None:
    """Human correction in Label Studio: a local server, push tasks with pre-annotations, pull corrections.

    Push and pull talk to --url / LABEL_STUDIO_URL with --api-key / LABEL_STUDIO_API_KEY (legacy token or
    personal access token); without them, to the server `spinetrack labelstudio start` runs from --dir.
    """


@labelstudio.command("start")
@ls_dir_option
@click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder Label Studio may serve images from (their parent, at least).")
@click.option("--port", type=int, help="Port (default: a free one).")
@click.option("--postgres", is_flag=True,
              help="Keep the data in PostgreSQL: a private server (Debian's postgresql) with its data in --dir, "
                   "on 127.0.0.1 and a free port, a random password in --dir/postgres.password (0600).")
@click.option("--database-url", envvar="SPINETRACK_LS_DATABASE_URL",
              help="Keep the data in this PostgreSQL database instead: postgresql://USER:PASSWORD@HOST:PORT/NAME "
                   "(env SPINETRACK_LS_DATABASE_URL).")
def ls_start(ls_dir: Path, data_root: Path, port: int | None, postgres: bool, database_url: str | None) -> None:
    """Start a local Label Studio (127.0.0.1; SQLite in --dir, or PostgreSQL) and print its URL, login and API key.

    A --dir started once with --postgres keeps using its PostgreSQL.
    """
    from ..labelstudio.server import start

    info = start(ls_dir, data_root, port, postgres=postgres, database_url=database_url)
    click.echo(f"Label Studio is up at {info.url}\n  login: {info.username} / {info.password}\n"
               f"  export LABEL_STUDIO_URL={info.url} LABEL_STUDIO_API_KEY={info.token}\n"
               f"  database: {info.database}\n"
               f"  local files served from {info.document_root}; log {info.log}")


@labelstudio.command("stop")
@ls_dir_option
def ls_stop(ls_dir: Path) -> None:
    """Stop the server started from --dir (and only that one), and its PostgreSQL if it has one of ours."""
    from ..labelstudio.server import stop

    click.echo("stopped" if stop(ls_dir) else f"no server of ours is running from {ls_dir}")


@labelstudio.command("status")
@ls_dir_option
@click.option("--json", "as_json", is_flag=True)
def ls_status(ls_dir: Path, as_json: bool) -> None:
    """Report the server started from --dir."""
    from ..io import dumps_json
    from ..labelstudio.server import status

    st = status(ls_dir)
    if as_json:
        click.echo(dumps_json(st, indent=True).decode())
    elif st["running"]:
        click.echo(f"running at {st['url']} (pid {st['pid']}, {'healthy' if st['healthy'] else 'not answering'}; "
                   f"database {st['database']})")
    else:
        click.echo(f"not running (folder {ls_dir})")
    raise SystemExit(0 if st["running"] else 1)


@labelstudio.command("config")
@skeleton_option
def ls_config(skeleton_name: str) -> None:
    """Print the labeling config generated from the skeleton (annotation/labeling_config.xml)."""
    from ..labelstudio.config import labeling_config

    click.echo(labeling_config(resolve_skeleton(skeleton_name) or SPINETRACK37), nl=False)


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
@ls_connection_options
def ls_push(coco_path: Path, images_dir: Path, project: str, pred_path: Path | None, model_version: str,
            record: Path | None, url: str | None, api_key: str | None, ls_dir: Path) -> None:
    """Send COCO.json's images to Label Studio as tasks with pre-annotations (no duplicates on re-push)."""
    from ..coco import read_persons, read_results
    from ..io import save_json
    from ..labelstudio.client import connect, image_url, push
    from ..labelstudio.convert import to_labelstudio

    ds = read_persons(coco_path)
    shown = ds if pred_path is None else read_results(pred_path, ds.skeleton, ds.images)
    conn, root = connect(url, api_key, ls_dir, require_root=True)
    tasks = to_labelstudio(shown, image_url(root, images_dir), model_version)
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
@ls_connection_options
def ls_pull(project: str, out_path: Path, edits_path: Path | None, report_path: Path | None, url: str | None,
            api_key: str | None, ls_dir: Path) -> None:
    """Fetch the annotated tasks as COCO keypoints (each annotator's latest non-cancelled annotation; with several
    annotators per task, their per-keypoint consensus)."""
    from ..findings import Report
    from ..io import load_json, save_json
    from ..labelstudio.client import connect, pull
    from ..labelstudio.convert import merge_pulls

    conn, _ = connect(url, api_key, ls_dir)
    previous = load_json(out_path) if out_path.is_file() else None
    since = ((previous or {}).get("info") or {}).get("labelstudio_watermark")
    res = pull(conn, project, since, first_new_id=1 + max((a["id"] for a in (previous or {}).get("annotations", [])),
                                                           default=0))
    coco = merge_pulls(previous, res.persons.to_coco(), res.watermark)
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
