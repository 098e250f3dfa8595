"""Run the CLI with one step held for a while, so that a test can kill the process right there.

``python -m tests.holding HOLD SECONDS ARGS...`` runs ``spinetrack ARGS...`` with HOLD delayed by SECONDS:
``push-mid`` (tasks are in Label Studio, the state does not know yet), ``pull-mid`` (corrections saved, not
recorded), ``merge-mid`` (the new dataset version written, not registered). A test-only mechanism: the library
has no pause of its own.
"""

from __future__ import annotations

import functools
import sys
import time

from spinetrack_tools.active_learning.workspace import Workspace
from spinetrack_tools.cli import main

HOLDS = {"push-mid": "record_pushed", "pull-mid": "record_labelled", "merge-mid": "record_merge"}


def hold(method: str, seconds: float) -> None:
    original = getattr(Workspace, method)

    @functools.wraps(original)
    def held(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    setattr(Workspace, method, held)


if __name__ == "__main__":
    name, seconds, *args = sys.argv[1:]
    if name in HOLDS:
        hold(HOLDS[name], float(seconds))
    main(args, prog_name="spinetrack")
