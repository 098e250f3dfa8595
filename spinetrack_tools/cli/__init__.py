"""The ``spinetrack`` command: registers the commands of each group module (a thin click layer over the library).

Exit codes: 0 success / clean, 1 the check found errors, 2 bad input or usage (``common.Group`` turns every
input error of every command into one line on stderr).
"""

from __future__ import annotations

import click

from .. import __version__
from . import al, browse, check, data, labelstudio, models
from .common import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spinetrack")
def main() -> None:
    """Tools for the SpineTrack 37-keypoint pose dataset: check, flag and curate COCO keypoint files.

    Exit codes: 0 clean, 1 the check found errors, 2 unreadable input or bad usage.
    """


for command in (check.validate, check.flag, check.validate_biomech, check.biomech, data.download, data.synth,
                models.predict_cmd, models.models_cmd, models.evaluate_cmd, models.train_cmd, labelstudio.labelstudio, browse.browse,
                al.init_cmd, al.al_round, al.status_cmd, al.annotate_sim, al.quickstart):
    main.add_command(command)
