"""What the command modules share: the one place that turns known errors into a one-line message and exit 2,
and the options several commands take. Nothing heavy is imported here (``spinetrack --help`` stays fast)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..io import InputError
from ..skeleton import KNOWN_SKELETONS, SPINETRACK37, Skeleton

EXIT_ERRORS = 1
EXIT_BAD_INPUT = 2
LS_DIR = Path(".spinetrack") / "labelstudio"


class BadInput(click.ClickException):
    """One-line error, exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Group(click.Group):
    """A click group whose commands' input errors (``InputError``, unreadable or unwritable files) end as one
    line on stderr and exit code 2, whichever command raised them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as e:
            raise BadInput(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise BadInput(f"{where}{e.strerror or e}") from None


def split_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
    """Values of a repeatable, comma-separated option."""
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


def skeleton_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--skeleton", "skeleton_name", default=SPINETRACK37.name, show_default=True,
        type=click.Choice([*KNOWN_SKELETONS, "auto"]),
        help="Keypoint layout the file must follow; 'auto' accepts the layout its category names.",
    )(fn)


def resolve_skeleton(name: str) -> Skeleton | None:
    return None if name == "auto" else KNOWN_SKELETONS[name]


def report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--report, --json and --skeleton, shared by the checking commands."""
    fn = skeleton_option(fn)
    fn = click.option("--json", "as_json", is_flag=True,
                      help="Print the JSON report on stdout instead of the table.")(fn)
    return click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
                        help="Write the findings as JSON ({'summary': ..., 'findings': [...]}).")(fn)


def ray_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--ray and --ray-address (the ``ray`` extra); ``ray_target`` turns them into the address to run at."""
    fn = click.option("--ray-address", metavar="local|auto|ray://HOST:PORT", default=None,
                      help="The Ray cluster to run on (implies --ray): local = as ray.init() (RAY_ADDRESS, else "
                           "this machine's latest cluster, else a new one for the command), auto = the cluster "
                           "this machine is part of, ray://... = a remote one through Ray Client. The "
                           "images must be readable at the same paths on every node.")(fn)
    return click.option("--ray", "use_ray", is_flag=True,
                        help="Run the predictions with Ray Data (on --ray-address, default local): one actor "
                             "per CPU with a single-threaded onnxruntime session (per GPU with GPUs); default: "
                             "in this process.")(fn)


def ray_target(use_ray: bool, address: str | None) -> str | None:
    """Where --ray / --ray-address ask to predict: None (in this process), ``local`` or a Ray address; a clear
    error when Ray is asked for and not installed."""
    target = address or ("local" if use_ray else None)
    if target is not None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise BadInput("--ray needs the ray extra: pip install 'spinetrack-tools[ray]'")
    return target


def noise_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--noise", type=click.FloatRange(0, 1), default=None,
                        help="Annotation noise to allow for, as a multiple of the annotators' spread (the "
                             "SpineTrack sigmas x sqrt(area)); default: measured on the file's spine chains "
                             "(0.25 for files with fewer than 20).")(fn)


def emit(report: Any, as_json: bool, report_path: Path | None) -> None:
    """Write the report where asked and print it (table, or JSON with --json)."""
    from ..io import dumps_json

    if report_path is not None:
        report.write_json(report_path)
    if as_json:
        sys.stdout.write(dumps_json(report.to_dict(), indent=True).decode() + "\n")
    else:
        click.echo(report.render_table(), nl=False)
        if report_path is not None:
            click.echo(f"report written to {report_path}")


def workspace_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--workspace", "ws_path", default=Path("."), show_default=True,
                        type=click.Path(path_type=Path, file_okay=False), help="The active-learning workspace.")(fn)


def ls_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--dir", "ls_dir", type=click.Path(path_type=Path, file_okay=False), default=LS_DIR,
                        show_default=True, help="Folder of the local server (database, log, credentials).")(fn)


def ls_connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--url", envvar="LABEL_STUDIO_URL", help="Label Studio URL (env LABEL_STUDIO_URL).")(fn)
    fn = click.option("--api-key", envvar="LABEL_STUDIO_API_KEY", help="API key (env LABEL_STUDIO_API_KEY).")(fn)
    return ls_dir_option(fn)
